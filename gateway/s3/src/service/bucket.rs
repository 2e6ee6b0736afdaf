use super::*;

impl ShardgateS3 {
    pub(super) async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let meta = self.gw.meta().clone();
        let bucket = req.input.bucket.clone();
        let lock = req.input.object_lock_enabled_for_bucket.unwrap_or(false);
        blocking(move || meta.create_bucket_with(&bucket, lock, now_ms()))
            .await
            .or_s3()?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    pub(super) async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let meta = self.gw.meta().clone();
        let bucket = req.input.bucket;
        blocking(move || meta.delete_bucket(&bucket))
            .await
            .or_s3()?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    pub(super) async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    pub(super) async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    pub(super) async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let meta = self.gw.meta().clone();
        let buckets = blocking(move || meta.list_buckets()).await.or_s3()?;
        let buckets = buckets
            .into_iter()
            .map(|(name, record)| Bucket {
                bucket_region: None,
                creation_date: Some(timestamp(record.created_unix_ms)),
                name: Some(name),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            ..Default::default()
        }))
    }
}
