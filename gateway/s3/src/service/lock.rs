//! Object Lock: a bucket's configuration (at creation, or later on a
//! bucket with versioning enabled; an optional default retention), and a
//! version's retention (GOVERNANCE or COMPLIANCE) and legal hold, set by
//! the `x-amz-object-lock-*` headers of PUT, copy and multipart uploads or
//! later by Put{ObjectRetention,ObjectLegalHold}, and shown on GET and HEAD.
//!
//! The rules live in the metadata store: the one place a version's row is
//! removed refuses a locked version, so no request and no background job
//! (garbage collection, repair, rebalancing) can drop a locked version's
//! fragments; a retention in force is only lengthened, a governance one
//! shortened only with `x-amz-bypass-governance-retention`.

use super::*;
use shardgate_meta::{DefaultRetention, LockMode, ObjectLock, ObjectSummary, Retention};

/// Where an upload keeps the lock its CreateMultipartUpload asked for.
pub(super) const UPLOAD_LOCK_MODE: &str = ":lock-mode";
pub(super) const UPLOAD_LOCK_UNTIL: &str = ":lock-until";
pub(super) const UPLOAD_LEGAL_HOLD: &str = ":legal-hold";

fn mode_of(mode: &str) -> S3Result<LockMode> {
    match mode {
        ObjectLockRetentionMode::GOVERNANCE => Ok(LockMode::Governance),
        ObjectLockRetentionMode::COMPLIANCE => Ok(LockMode::Compliance),
        other => Err(s3_error!(
            InvalidArgument,
            "Unknown Object Lock mode {other:?}: GOVERNANCE or COMPLIANCE"
        )),
    }
}

fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Governance => ObjectLockRetentionMode::GOVERNANCE,
        LockMode::Compliance => ObjectLockRetentionMode::COMPLIANCE,
    }
}

fn unix_ms(t: &Timestamp) -> u64 {
    let t: std::time::SystemTime =
        std::time::SystemTime::from(time::OffsetDateTime::from(t.clone()));
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hold_of(status: &str) -> S3Result<bool> {
    match status {
        ObjectLockLegalHoldStatus::ON => Ok(true),
        ObjectLockLegalHoldStatus::OFF => Ok(false),
        other => Err(s3_error!(
            InvalidArgument,
            "Unknown legal hold status {other:?}: ON or OFF"
        )),
    }
}

/// The retention a write's mode and retain-until headers ask for: both
/// or neither, the date in the future.
pub(super) fn retention_headers(
    mode: Option<&str>,
    until: Option<&Timestamp>,
    now_unix_ms: u64,
) -> S3Result<Option<Retention>> {
    match (mode, until) {
        (None, None) => Ok(None),
        (Some(mode), Some(until)) => {
            let until_unix_ms = unix_ms(until);
            if until_unix_ms <= now_unix_ms {
                return Err(s3_error!(
                    InvalidArgument,
                    "The retain until date must be in the future!"
                ));
            }
            Ok(Some(Retention {
                mode: mode_of(mode)?,
                until_unix_ms,
            }))
        }
        _ => Err(s3_error!(
            InvalidArgument,
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied"
        )),
    }
}

/// The lock a write's headers ask for (see `requested_lock!`).
pub(super) fn requested(
    mode: Option<&str>,
    until: Option<&Timestamp>,
    hold: Option<&str>,
) -> S3Result<(Option<Retention>, bool)> {
    let retention = retention_headers(mode, until, now_ms())?;
    let hold = hold.map(hold_of).transpose()?.unwrap_or(false);
    Ok((retention, hold))
}

/// A version's lock as GET and HEAD show it: (mode, retain until, legal
/// hold).
pub(super) fn lock_output(
    summary: &ObjectSummary,
) -> (
    Option<ObjectLockMode>,
    Option<Timestamp>,
    Option<ObjectLockLegalHoldStatus>,
) {
    let retention = summary.retention();
    (
        retention.map(|r| ObjectLockMode::from_static(mode_name(r.mode))),
        retention.map(|r| timestamp(r.until_unix_ms)),
        summary
            .legal_hold
            .then(|| ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON)),
    )
}

/// The upload metadata that carries a CreateMultipartUpload's lock to its
/// completion.
pub(super) fn stash_lock(meta: &mut ObjectMeta, retention: Option<Retention>, legal_hold: bool) {
    if let Some(r) = retention {
        meta.user_metadata
            .insert(UPLOAD_LOCK_MODE.into(), mode_name(r.mode).into());
        meta.user_metadata
            .insert(UPLOAD_LOCK_UNTIL.into(), r.until_unix_ms.to_string());
    }
    if legal_hold {
        meta.user_metadata.insert(
            UPLOAD_LEGAL_HOLD.into(),
            ObjectLockLegalHoldStatus::ON.into(),
        );
    }
}

/// Takes the lock [`stash_lock`] left in an upload's metadata.
pub(super) fn unstash_lock(
    metadata: &mut std::collections::BTreeMap<String, String>,
) -> S3Result<(Option<Retention>, bool)> {
    let mode = metadata.remove(UPLOAD_LOCK_MODE);
    let until = metadata.remove(UPLOAD_LOCK_UNTIL);
    let hold = metadata.remove(UPLOAD_LEGAL_HOLD).is_some();
    let retention = match (mode, until.and_then(|u| u.parse::<u64>().ok())) {
        (Some(mode), Some(until_unix_ms)) => Some(Retention {
            mode: mode_of(&mode)?,
            until_unix_ms,
        }),
        _ => None,
    };
    Ok((retention, hold))
}

/// A default retention as the configuration gives it: a mode and either
/// days or years, a positive number.
fn default_retention(rule: Option<ObjectLockRule>) -> S3Result<Option<DefaultRetention>> {
    let Some(d) = rule.and_then(|r| r.default_retention) else {
        return Ok(None);
    };
    let mode = d
        .mode
        .as_ref()
        .ok_or_else(|| s3_error!(MalformedXML, "A DefaultRetention needs a Mode"))
        .and_then(|m| mode_of(m.as_str()))?;
    let period = |what: &str| {
        let mut e = s3_error!(
            InvalidArgument,
            "The default retention period must be a positive number of {what}, 100 years at most"
        );
        e.set_code(S3ErrorCode::Custom("InvalidRetentionPeriod".into()));
        e
    };
    // S3 allows up to 100 years.
    let (days, years) = match (d.days, d.years) {
        (Some(days), None) if (1..=36_500).contains(&days) => (days as u32, 0),
        (None, Some(years)) if (1..=100).contains(&years) => (0, years as u32),
        (Some(_), Some(_)) => {
            return Err(s3_error!(
                MalformedXML,
                "A DefaultRetention has Days or Years, not both"
            ));
        }
        (Some(_), None) => return Err(period("days")),
        (None, Some(_)) => return Err(period("years")),
        (None, None) => {
            return Err(s3_error!(
                MalformedXML,
                "A DefaultRetention needs Days or Years"
            ));
        }
    };
    Ok(Some(DefaultRetention { mode, days, years }))
}

impl ShardgateS3 {
    pub(super) async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        // The owner is checked again in the change's own transaction: the
        // bucket may have been deleted and created by another user since
        // the access check.
        let caller = Caller::of(&req.extensions)?.writer();
        let input = req.input;
        let config = input
            .object_lock_configuration
            .ok_or_else(|| s3_error!(MalformedXML, "An ObjectLockConfiguration is needed"))?;
        if config
            .object_lock_enabled
            .as_ref()
            .is_none_or(|e| e.as_str() != ObjectLockEnabled::ENABLED)
        {
            return Err(s3_error!(MalformedXML, "ObjectLockEnabled must be Enabled"));
        }
        let lock = ObjectLock {
            default_retention: default_retention(config.rule)?,
        };
        self.gw
            .metadata()
            .set_object_lock(&caller, &input.bucket, &lock)
            .await
            .or_s3()?;
        Ok(S3Response::new(PutObjectLockConfigurationOutput::default()))
    }

    pub(super) async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        let record = self.bucket_record(&req.input.bucket).await?;
        let lock = record
            .object_lock()
            .map_err(GatewayError::from)
            .or_s3()?
            .ok_or_else(|| {
                s3_error!(
                    ObjectLockConfigurationNotFoundError,
                    "Object Lock configuration does not exist for this bucket"
                )
            })?;
        let rule = lock.default_retention.map(|d| ObjectLockRule {
            default_retention: Some(s3s::dto::DefaultRetention {
                mode: Some(ObjectLockRetentionMode::from_static(mode_name(d.mode))),
                days: (d.days > 0).then_some(d.days as i32),
                years: (d.years > 0).then_some(d.years as i32),
            }),
        });
        Ok(S3Response::new(GetObjectLockConfigurationOutput {
            object_lock_configuration: Some(ObjectLockConfiguration {
                object_lock_enabled: Some(ObjectLockEnabled::from_static(
                    ObjectLockEnabled::ENABLED,
                )),
                rule,
            }),
        }))
    }

    pub(super) async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        // The owner is checked again in the change's own transaction: the
        // bucket may have been deleted and created by another user since
        // the access check.
        let caller = Caller::of(&req.extensions)?.writer();
        let input = req.input;
        convert::check_key(&input.key)?;
        let selector = version_selector(input.version_id.as_deref())?;
        let now = now_ms();
        let retention = match input.retention {
            Some(ObjectLockRetention {
                mode: Some(mode),
                retain_until_date: Some(until),
            }) => retention_headers(Some(mode.as_str()), Some(&until), now)?,
            Some(ObjectLockRetention {
                mode: None,
                retain_until_date: None,
            })
            | None => None,
            Some(_) => {
                return Err(s3_error!(
                    MalformedXML,
                    "A Retention needs both a Mode and a RetainUntilDate"
                ));
            }
        };
        let bypass = input.bypass_governance_retention.unwrap_or(false);
        self.gw
            .metadata()
            .set_retention(
                &caller,
                &input.bucket,
                &input.key,
                selector,
                retention,
                bypass,
                now,
            )
            .await
            .or_s3()?;
        Ok(S3Response::new(PutObjectRetentionOutput::default()))
    }

    pub(super) async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        let asked = input.version_id.as_deref();
        let summary = self.lock_state(&input.bucket, &input.key, asked).await?;
        let object = (&*input.bucket, &*input.key);
        self.recheck_read(&caller, &["GetObjectRetention"], object, asked, &summary)
            .await?;
        let retention = summary.retention().ok_or_else(|| {
            s3_error!(
                NoSuchObjectLockConfiguration,
                "The specified object does not have a ObjectLock configuration"
            )
        })?;
        Ok(S3Response::new(GetObjectRetentionOutput {
            retention: Some(ObjectLockRetention {
                mode: Some(ObjectLockRetentionMode::from_static(mode_name(
                    retention.mode,
                ))),
                retain_until_date: Some(timestamp(retention.until_unix_ms)),
            }),
        }))
    }

    pub(super) async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        // The owner is checked again in the change's own transaction.
        let caller = Caller::of(&req.extensions)?.writer();
        let input = req.input;
        convert::check_key(&input.key)?;
        let selector = version_selector(input.version_id.as_deref())?;
        let on = hold_of(
            input
                .legal_hold
                .and_then(|h| h.status)
                .as_ref()
                .map(|s| s.as_str())
                .ok_or_else(|| s3_error!(MalformedXML, "A LegalHold needs a Status"))?,
        )?;
        self.gw
            .metadata()
            .set_legal_hold(&caller, &input.bucket, &input.key, selector, on)
            .await
            .or_s3()?;
        Ok(S3Response::new(PutObjectLegalHoldOutput::default()))
    }

    pub(super) async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        let asked = input.version_id.as_deref();
        let summary = self.lock_state(&input.bucket, &input.key, asked).await?;
        let object = (&*input.bucket, &*input.key);
        self.recheck_read(&caller, &["GetObjectLegalHold"], object, asked, &summary)
            .await?;
        let status = match summary.legal_hold {
            true => ObjectLockLegalHoldStatus::ON,
            false => ObjectLockLegalHoldStatus::OFF,
        };
        Ok(S3Response::new(GetObjectLegalHoldOutput {
            legal_hold: Some(ObjectLockLegalHold {
                status: Some(ObjectLockLegalHoldStatus::from_static(status)),
            }),
        }))
    }

    /// The summary of the version a lock request names, in a bucket with
    /// Object Lock.
    async fn lock_state(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<ObjectSummary> {
        convert::check_key(key)?;
        let selector = version_selector(version_id)?;
        let meta = self.gw.metadata();
        let record = meta.bucket(bucket).await.or_s3()?;
        let row = meta.object_version(bucket, key, selector).await.or_s3()?;
        let record =
            record.ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))?;
        if record
            .object_lock()
            .map_err(GatewayError::from)
            .or_s3()?
            .is_none()
        {
            return Err(s3_error!(
                InvalidRequest,
                "Bucket is missing Object Lock Configuration"
            ));
        }
        match (row, version_id) {
            (Some(r), _) if !r.summary.delete_marker => Ok(r.summary),
            (Some(_), Some(_)) => Err(s3_error(GatewayError::Meta(
                shardgate_meta::MetaError::DeleteMarker,
            ))),
            (_, None) => Err(s3_error!(NoSuchKey, "The specified key does not exist.")),
            (None, Some(_)) => Err(s3_error!(
                NoSuchVersion,
                "The specified version does not exist."
            )),
        }
    }
}
