use super::*;

/// S3's largest `MaxBuckets`.
const MAX_BUCKETS_LISTED: i32 = 10_000;

impl ShardgateS3 {
    pub(super) async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = &req.input;
        let lock = input.object_lock_enabled_for_bucket.unwrap_or(false);
        let asked = requested_acl!(input, with_write);
        let settings =
            self.settings_for_new_bucket(&caller, asked, input.object_ownership.as_ref())?;
        let created = self
            .gw
            .metadata()
            .create_bucket(&input.bucket, lock, caller.owner(), &settings, now_ms())
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

    /// ListBuckets: the caller's buckets (the root's: all), by name, from
    /// `Prefix`, `MaxBuckets` (1 to 10,000) at a time, a `ContinuationToken`
    /// resuming after the last one listed.
    pub(super) async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        let max = match input.max_buckets {
            None => usize::MAX,
            Some(n) if (1..=MAX_BUCKETS_LISTED).contains(&n) => n as usize,
            Some(n) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "MaxBuckets must be between 1 and {MAX_BUCKETS_LISTED}, not {n}"
                ));
            }
        };
        let after = input
            .continuation_token
            .as_deref()
            .map(convert::decode_token)
            .transpose()?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let mine = self.gw.metadata().list_buckets().await.or_s3()?;
        let mut mine: Vec<_> = mine
            .into_iter()
            .filter(|(name, record)| {
                name.starts_with(&prefix)
                    && after.as_deref().is_none_or(|a| name.as_str() > a)
                    && caller.owns(record)
            })
            .collect();
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        let more = mine.len() > max;
        mine.truncate(max);
        let next = more
            .then(|| mine.last().map(|(name, _)| convert::encode_token(name)))
            .flatten();
        let buckets = mine
            .into_iter()
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
            continuation_token: next,
            prefix: input.prefix,
        }))
    }
}
