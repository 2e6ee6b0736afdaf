"""boto3 against a running shardgate: S3 Object Lock as AWS S3 does it.
A bucket created with ObjectLockEnabledForBucket is versioned and reports
the lock enabled without a rule; a plain bucket has no configuration,
refuses lock headers, and takes the lock only once versioned; a locked
bucket cannot be suspended. Retention set on PUT reads back by HEAD and
GetObjectRetention; GOVERNANCE blocks a versioned DELETE unless bypassed,
COMPLIANCE blocks it always and may only be lengthened; a delete marker is
still allowed. Legal holds (by PutObjectLegalHold and on PUT) block deletes
until lifted. Default retention applies to new objects and is validated.
DeleteObjects reports locked versions per key; multipart uploads and copies
take lock headers; a locked bucket cannot be emptied or deleted. Run by
tests/s3_clients.rs; exits non-zero on the first failed check."""

import datetime
import sys

from gateway_client import check, client, error_code, expect_error

s3 = client()
GOV, COMP = "GOVERNANCE", "COMPLIANCE"


def until(**delta):
    """A timezone-aware UTC instant `delta` from now, in whole seconds."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now + datetime.timedelta(**delta)


def near(got, want, slack, what):
    check(isinstance(got, datetime.datetime) and abs((got - want).total_seconds()) <= slack,
          f"{what}: {got} within {slack} s of {want}")


def put_locked(key, mode=None, date=None, bucket="locked", **kw):
    """PUTs `key` (with a retention if given) and returns its version id."""
    if mode:
        kw.update(ObjectLockMode=mode, ObjectLockRetainUntilDate=date)
    vid = s3.put_object(Bucket=bucket, Key=key, Body=key.encode(), **kw).get("VersionId")
    check(isinstance(vid, str) and vid and vid != "null", f"PUT {key}: a version id, got {vid!r}")
    return vid


def lock_config(bucket):
    return s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]


ENABLED = {"ObjectLockEnabled": "Enabled"}

# 1. A bucket created with Object Lock: versioned, enabled, no rule.
s3.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
check(s3.get_bucket_versioning(Bucket="locked").get("Status") == "Enabled",
      "a lock-enabled bucket is versioned")
c = lock_config("locked")
check(c.get("ObjectLockEnabled") == "Enabled" and "Rule" not in c, f"lock Enabled, no Rule: {c}")

# 2. A plain bucket: no configuration, no lock headers, the lock only once versioned.
s3.create_bucket(Bucket="plain")
expect_error("ObjectLockConfigurationNotFoundError", s3.get_object_lock_configuration, Bucket="plain")
expect_error("InvalidRequest", s3.put_object, Bucket="plain", Key="x", Body=b"x",
             ObjectLockMode=GOV, ObjectLockRetainUntilDate=until(days=1))
expect_error("InvalidBucketState", s3.put_object_lock_configuration, Bucket="plain",
             ObjectLockConfiguration=ENABLED)
s3.put_bucket_versioning(Bucket="plain", VersioningConfiguration={"Status": "Enabled"})
check(error_code(s3.put_object_lock_configuration, Bucket="plain",
                 ObjectLockConfiguration=ENABLED) == (None, 200),
      "the lock can be enabled on a versioned bucket")
check(lock_config("plain").get("ObjectLockEnabled") == "Enabled", "plain's lock reads back Enabled")

# 3. Versioning of a locked bucket cannot be suspended.
expect_error("InvalidBucketState", s3.put_bucket_versioning, Bucket="locked",
             VersioningConfiguration={"Status": "Suspended"})
check(s3.get_bucket_versioning(Bucket="locked").get("Status") == "Enabled", "still Enabled")

# 4. GOVERNANCE retention on PUT; a versioned DELETE needs the bypass.
day = until(days=1)
v = put_locked("gov", GOV, day)
h = s3.head_object(Bucket="locked", Key="gov", VersionId=v)
check(h.get("ObjectLockMode") == GOV, f"HEAD shows GOVERNANCE: {h.get('ObjectLockMode')}")
near(h.get("ObjectLockRetainUntilDate"), day, 2, "HEAD's retain-until date")
r = s3.get_object_retention(Bucket="locked", Key="gov", VersionId=v)["Retention"]
check(r.get("Mode") == GOV, f"GetObjectRetention: GOVERNANCE: {r}")
near(r.get("RetainUntilDate"), day, 2, "GetObjectRetention's date")
check(expect_error("AccessDenied", s3.delete_object, Bucket="locked", Key="gov", VersionId=v) == 403,
      "a locked version's DELETE is a 403")
check(error_code(s3.delete_object, Bucket="locked", Key="gov", VersionId=v,
                 BypassGovernanceRetention=True) == (None, 200), "the bypass deletes a GOVERNANCE version")
expect_error("NoSuchVersion", s3.get_object, Bucket="locked", Key="gov", VersionId=v)

# 5. A mode needs a date, and a date in the future.
expect_error("InvalidArgument", s3.put_object, Bucket="locked", Key="bad", Body=b"", ObjectLockMode=GOV)
expect_error("InvalidArgument", s3.put_object, Bucket="locked", Key="bad", Body=b"",
             ObjectLockMode=GOV, ObjectLockRetainUntilDate=until(days=-1))

# 6. COMPLIANCE: no bypass, only lengthened; a delete marker is fine.
comp = put_locked("comp", COMP, day)
expect_error("AccessDenied", s3.delete_object, Bucket="locked", Key="comp", VersionId=comp,
             BypassGovernanceRetention=True)
expect_error("AccessDenied", s3.put_object_retention, Bucket="locked", Key="comp", VersionId=comp,
             Retention={"Mode": COMP, "RetainUntilDate": until(hours=1)})
expect_error("AccessDenied", s3.put_object_retention, Bucket="locked", Key="comp", VersionId=comp,
             Retention={"Mode": GOV, "RetainUntilDate": day})
longer = until(days=2)
s3.put_object_retention(Bucket="locked", Key="comp", VersionId=comp,
                        Retention={"Mode": COMP, "RetainUntilDate": longer})
r = s3.get_object_retention(Bucket="locked", Key="comp", VersionId=comp)["Retention"]
check(r.get("Mode") == COMP, f"still COMPLIANCE: {r}")
near(r.get("RetainUntilDate"), longer, 2, "the lengthened date")
r = s3.delete_object(Bucket="locked", Key="comp")
check(r.get("DeleteMarker") is True, f"DELETE without an id adds a marker: {r}")
got = s3.get_object(Bucket="locked", Key="comp", VersionId=comp)["Body"].read()
check(got == b"comp", "the COMPLIANCE version still reads by id")

# 7. GOVERNANCE may be shortened only with the bypass.
gov2 = put_locked("gov2", GOV, until(days=1))
hour = {"Mode": GOV, "RetainUntilDate": until(hours=1)}
expect_error("AccessDenied", s3.put_object_retention, Bucket="locked", Key="gov2", VersionId=gov2,
             Retention=hour)
check(error_code(s3.put_object_retention, Bucket="locked", Key="gov2", VersionId=gov2,
                 Retention=hour, BypassGovernanceRetention=True) == (None, 200),
      "the bypass shortens a GOVERNANCE retention")

# 8. Legal holds.
held = put_locked("held")
s3.put_object_legal_hold(Bucket="locked", Key="held", VersionId=held, LegalHold={"Status": "ON"})
hold = s3.get_object_legal_hold(Bucket="locked", Key="held", VersionId=held)["LegalHold"]
check(hold.get("Status") == "ON", f"the legal hold reads back ON: {hold}")
h = s3.head_object(Bucket="locked", Key="held", VersionId=held)
check(h.get("ObjectLockLegalHoldStatus") == "ON", f"HEAD shows the hold: {h.get('ObjectLockLegalHoldStatus')}")
expect_error("AccessDenied", s3.delete_object, Bucket="locked", Key="held", VersionId=held,
             BypassGovernanceRetention=True)
s3.put_object_legal_hold(Bucket="locked", Key="held", VersionId=held, LegalHold={"Status": "OFF"})
check(error_code(s3.delete_object, Bucket="locked", Key="held", VersionId=held) == (None, 200),
      "with the hold lifted the version deletes")
put_locked("fresh")
hold = s3.get_object_legal_hold(Bucket="locked", Key="fresh")["LegalHold"]
check(hold.get("Status") == "OFF", f"an object never held: OFF: {hold}")
put_locked("held", ObjectLockLegalHoldStatus="ON")
h = s3.head_object(Bucket="locked", Key="held")
check(h.get("ObjectLockLegalHoldStatus") == "ON", "a legal hold set on PUT")

# 9. No retention, no retention configuration.
expect_error("NoSuchObjectLockConfiguration", s3.get_object_retention, Bucket="locked", Key="fresh")

# 10. Default retention.
rule = {"DefaultRetention": {"Mode": GOV, "Days": 1}}
s3.put_object_lock_configuration(Bucket="locked", ObjectLockConfiguration=dict(ENABLED, Rule=rule))
c = lock_config("locked")
d = c.get("Rule", {}).get("DefaultRetention", {})
check(c.get("ObjectLockEnabled") == "Enabled" and d.get("Mode") == GOV and d.get("Days") == 1,
      f"the default retention reads back: {c}")
put_locked("defaulted")
h = s3.head_object(Bucket="locked", Key="defaulted")
check(h.get("ObjectLockMode") == GOV, f"the default mode applies: {h.get('ObjectLockMode')}")
near(h.get("ObjectLockRetainUntilDate"), until(days=1), 60, "the default retain-until date")
expect_error("InvalidRetentionPeriod", s3.put_object_lock_configuration, Bucket="locked",
             ObjectLockConfiguration=dict(ENABLED, Rule={"DefaultRetention": {"Mode": GOV, "Days": 0}}))
# S3's limit is 100 years (past it, a retention could outlive any date).
expect_error("InvalidRetentionPeriod", s3.put_object_lock_configuration, Bucket="locked",
             ObjectLockConfiguration=dict(ENABLED, Rule={"DefaultRetention": {"Mode": GOV, "Days": 36501}}))
expect_error("InvalidRetentionPeriod", s3.put_object_lock_configuration, Bucket="locked",
             ObjectLockConfiguration=dict(ENABLED, Rule={"DefaultRetention": {"Mode": GOV, "Years": 101}}))
expect_error("MalformedXML", s3.put_object_lock_configuration, Bucket="locked",
             ObjectLockConfiguration=dict(ENABLED, Rule={"DefaultRetention": {"Mode": GOV, "Days": 1,
                                                                              "Years": 1}}))
s3.put_object_lock_configuration(Bucket="locked", ObjectLockConfiguration=ENABLED)
c = lock_config("locked")
check(c.get("ObjectLockEnabled") == "Enabled" and "Rule" not in c, f"the rule is reset: {c}")

# 11. DeleteObjects reports a locked version per key.
v1 = put_locked("batch1", GOV, until(days=1))
v2 = put_locked("batch2")
r = s3.delete_objects(Bucket="locked", Delete={"Objects": [{"Key": "batch1", "VersionId": v1},
                                                           {"Key": "batch2", "VersionId": v2}]})
check([d["Key"] for d in r.get("Deleted", [])] == ["batch2"], f"batch2 deleted: {r.get('Deleted')}")
errs = [(e.get("Key"), e.get("Code")) for e in r.get("Errors", [])]
check(errs == [("batch1", "AccessDenied")], f"batch1 refused: {r.get('Errors')}")

# 12. A multipart upload takes the lock of CreateMultipartUpload.
up = s3.create_multipart_upload(Bucket="locked", Key="mp", ObjectLockMode=GOV,
                                ObjectLockRetainUntilDate=until(days=1))
part = s3.upload_part(Bucket="locked", Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"m" * 1024)
r = s3.complete_multipart_upload(Bucket="locked", Key="mp", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
mp = r.get("VersionId")
check(mp not in (None, "null"), f"the multipart upload has a version id: {mp}")
h = s3.head_object(Bucket="locked", Key="mp", VersionId=mp)
check(h.get("ObjectLockMode") == GOV, f"the multipart object is GOVERNANCE: {h.get('ObjectLockMode')}")

# 13. A copy takes the lock headers.
r = s3.copy_object(Bucket="locked", Key="cp", CopySource={"Bucket": "locked", "Key": "held"},
                   ObjectLockMode=COMP, ObjectLockRetainUntilDate=until(days=1))
cp = r.get("VersionId")
check(cp not in (None, "null"), f"the copy has a version id: {cp}")
h = s3.head_object(Bucket="locked", Key="cp")
check(h.get("ObjectLockMode") == COMP, f"the copy is COMPLIANCE: {h.get('ObjectLockMode')}")

# 14. A locked bucket cannot be emptied.
entries, markers = [], {}
for _ in range(10):
    r = s3.list_object_versions(Bucket="locked", **markers)
    entries += r.get("Versions", []) + r.get("DeleteMarkers", [])
    if not r.get("IsTruncated"):
        break
    markers = {"KeyMarker": r["NextKeyMarker"], "VersionIdMarker": r["NextVersionIdMarker"]}
else:
    check(False, "ListObjectVersions still truncated after 10 pages")
for e in entries:
    got, status = error_code(s3.delete_object, Bucket="locked", Key=e["Key"], VersionId=e["VersionId"],
                             BypassGovernanceRetention=True)
    check(got in (None, "AccessDenied"), f"DELETE {e['Key']} {e['VersionId']}: {got} ({status})")
for key, vid in (("comp", comp), ("cp", cp)):
    check(error_code(s3.head_object, Bucket="locked", Key=key, VersionId=vid) == (None, 200),
          f"the COMPLIANCE version of {key} survives")
expect_error("BucketNotEmpty", s3.delete_bucket, Bucket="locked")

print("object_lock: all checks passed", file=sys.stderr)
