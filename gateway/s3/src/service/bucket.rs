use super::*;

impl ShardgateS3 {
    pub(super) async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let lock = req.input.object_lock_enabled_for_bucket.unwrap_or(false);
        let created = self
            .gw
            .metadata()
            .create_bucket(&req.input.bucket, lock, caller.owner(), now_ms())
            .await;
        if let Err(shardgate_meta::MetaError::BucketExists) = &created {
            // Bucket names are shared by all users: someone else's is taken.
            let record = self.bucket_record(&req.input.bucket).await?;
            if !caller.owns(&record) {
                return Err(s3_error!(
                    BucketAlreadyExists,
                    "The requested bucket name is not available. The bucket namespace is shared by all users of the gateway. Please select a different name and try again."
                ));
            }
        }
        created.or_s3()?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    pub(super) async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let caller = Caller::of(&req.extensions)?.writer();
        self.gw
            .metadata()
            .delete_bucket(&caller, &req.input.bucket)
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
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let buckets = self.gw.metadata().list_buckets().await.or_s3()?;
        let buckets = buckets
            .into_iter()
            .filter(|(_, record)| caller.owns(record))
            .map(|(name, record)| Bucket {
                bucket_region: None,
                creation_date: Some(timestamp(record.created_unix_ms)),
                name: Some(name),
            })
            .collect();
        let owner = Owner {
            display_name: Some(caller.name.clone().unwrap_or_else(|| "shardgate".into())),
            id: caller.requester.canonical_id().map(str::to_string),
        };
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner),
            ..Default::default()
        }))
    }
}
