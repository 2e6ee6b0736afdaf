//! PutBucketPolicy, GetBucketPolicy, DeleteBucketPolicy,
//! GetBucketPolicyStatus, and the bucket's Public Access Block: who may use
//! a bucket besides its owner. The access check evaluates them on every
//! request ([`crate::access`]); the policy is checked here once, when set.

use super::*;
use shardgate_authz::Policy as BucketPolicy;
use shardgate_meta::{BucketAccess, public_access};

impl ShardgateS3 {
    pub(super) async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let caller = Caller::of(&req.extensions)?.writer();
        let input = req.input;
        let policy = BucketPolicy::parse(&input.policy, &input.bucket)
            .map_err(|e| s3_error!(MalformedPolicy, "{e}"))?;
        // BlockPublicPolicy is checked in the change's own transaction.
        let setting = BucketAccess::Policy {
            public: policy.is_public(),
            text: Some(input.policy),
        };
        self.change_access(&caller, &input.bucket, setting).await?;
        Ok(S3Response::new(PutBucketPolicyOutput::default()))
    }

    pub(super) async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let text = self.policy_text(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketPolicyOutput {
            policy: Some(text),
        }))
    }

    pub(super) async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        let bucket = &req.input.bucket;
        let text = self.policy_text(bucket).await?;
        let policy = BucketPolicy::parse(&text, bucket)
            .map_err(|e| s3_error!(InternalError, "the stored policy no longer parses: {e}"))?;
        Ok(S3Response::new(GetBucketPolicyStatusOutput {
            policy_status: Some(PolicyStatus {
                is_public: Some(policy.is_public()),
            }),
        }))
    }

    pub(super) async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        let caller = Caller::of(&req.extensions)?.writer();
        self.change_access(
            &caller,
            &req.input.bucket,
            BucketAccess::Policy {
                text: None,
                public: false,
            },
        )
        .await?;
        Ok(S3Response::new(DeleteBucketPolicyOutput::default()))
    }

    /// Sets or deletes the policy or the Public Access Block; the caller
    /// is checked again in the change's transaction.
    async fn change_access(
        &self,
        caller: &shardgate_meta::Writer,
        bucket: &str,
        setting: BucketAccess,
    ) -> S3Result<()> {
        self.gw
            .metadata()
            .set_bucket_access(caller, bucket, &setting)
            .await
            .or_s3()
    }

    /// The bucket's policy text, or NoSuchBucketPolicy.
    async fn policy_text(&self, bucket: &str) -> S3Result<String> {
        self.bucket_record(bucket)
            .await?
            .policy()
            .or_s3()?
            .ok_or_else(|| s3_error!(NoSuchBucketPolicy, "The bucket policy does not exist"))
    }

    pub(super) async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        let caller = Caller::of(&req.extensions)?.writer();
        let c = &req.input.public_access_block_configuration;
        let on = |v: Option<bool>, flag: u8| if v.unwrap_or(false) { flag } else { 0 };
        let flags = public_access::CONFIGURED
            | on(c.block_public_acls, public_access::BLOCK_PUBLIC_ACLS)
            | on(c.ignore_public_acls, public_access::IGNORE_PUBLIC_ACLS)
            | on(c.block_public_policy, public_access::BLOCK_PUBLIC_POLICY)
            | on(
                c.restrict_public_buckets,
                public_access::RESTRICT_PUBLIC_BUCKETS,
            );
        self.change_access(
            &caller,
            &req.input.bucket,
            BucketAccess::PublicAccessBlock(Some(flags)),
        )
        .await?;
        Ok(S3Response::new(PutPublicAccessBlockOutput::default()))
    }

    pub(super) async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        let flags = self
            .bucket_record(&req.input.bucket)
            .await?
            .public_access_block()
            .or_s3()?;
        if flags & public_access::CONFIGURED == 0 {
            let mut e = s3_error!(
                InvalidRequest,
                "The public access block configuration was not found"
            );
            e.set_code(S3ErrorCode::Custom(
                "NoSuchPublicAccessBlockConfiguration".into(),
            ));
            e.set_status_code(http::StatusCode::NOT_FOUND);
            return Err(e);
        }
        let is = |flag: u8| Some(flags & flag != 0);
        Ok(S3Response::new(GetPublicAccessBlockOutput {
            public_access_block_configuration: Some(PublicAccessBlockConfiguration {
                block_public_acls: is(public_access::BLOCK_PUBLIC_ACLS),
                ignore_public_acls: is(public_access::IGNORE_PUBLIC_ACLS),
                block_public_policy: is(public_access::BLOCK_PUBLIC_POLICY),
                restrict_public_buckets: is(public_access::RESTRICT_PUBLIC_BUCKETS),
            }),
        }))
    }

    pub(super) async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        let caller = Caller::of(&req.extensions)?.writer();
        self.change_access(
            &caller,
            &req.input.bucket,
            BucketAccess::PublicAccessBlock(None),
        )
        .await?;
        Ok(S3Response::new(DeletePublicAccessBlockOutput::default()))
    }
}
