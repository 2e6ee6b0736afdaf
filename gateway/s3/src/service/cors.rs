//! PutBucketCors, GetBucketCors, DeleteBucketCors: a bucket's CORS rules,
//! kept in its record. The server answers preflights and adds the headers
//! to real requests from them ([`crate::cors`]).

use super::*;
use shardgate_meta::CorsRule;

impl ShardgateS3 {
    pub(super) async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        // The owner is checked again in the change's own transaction: the
        // bucket may have been deleted and created by another user since
        // the access check.
        let caller = Caller::of(&req.extensions)?.writer();
        let input = req.input;
        let rules: Vec<CorsRule> = input
            .cors_configuration
            .cors_rules
            .into_iter()
            .map(|r| CorsRule {
                id: r.id,
                allowed_origins: r.allowed_origins,
                allowed_methods: r.allowed_methods,
                allowed_headers: r.allowed_headers.unwrap_or_default(),
                expose_headers: r.expose_headers.unwrap_or_default(),
                max_age_seconds: r.max_age_seconds,
            })
            .collect();
        crate::cors::validate(&rules)?;
        self.gw
            .metadata()
            .set_bucket_cors(&caller, &input.bucket, &rules)
            .await
            .or_s3()?;
        Ok(S3Response::new(PutBucketCorsOutput::default()))
    }

    pub(super) async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let record = self.bucket_record(&req.input.bucket).await?;
        let rules = record.cors().map_err(GatewayError::from).or_s3()?;
        if rules.is_empty() {
            return Err(s3_error!(
                NoSuchCORSConfiguration,
                "The CORS configuration does not exist"
            ));
        }
        let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
        let rules = rules
            .into_iter()
            .map(|r| CORSRule {
                id: r.id,
                allowed_origins: r.allowed_origins,
                allowed_methods: r.allowed_methods,
                allowed_headers: some(r.allowed_headers),
                expose_headers: some(r.expose_headers),
                max_age_seconds: r.max_age_seconds,
            })
            .collect();
        Ok(S3Response::new(GetBucketCorsOutput {
            cors_rules: Some(rules),
        }))
    }

    pub(super) async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        let caller = Caller::of(&req.extensions)?.writer();
        self.gw
            .metadata()
            .set_bucket_cors(&caller, &req.input.bucket, &[])
            .await
            .or_s3()?;
        Ok(S3Response::new(DeleteBucketCorsOutput::default()))
    }
}
