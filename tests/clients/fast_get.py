"""boto3, the aws CLI's botocore and presigned URLs against a running
shardgate: signed GETs of whole objects take the gateway's fast path
(issue 26) and answer exactly what s3s's generic path answers, headers and
bytes; whatever the fast path does not verify in full goes the generic way
and is refused there as before.

Each object is read twice with the same client: as is (the fast path, which
`shardgate_s3_fast_gets_total` in /metrics counts) and with one extra
header the fast path does not take (the generic path), and the two answers
are compared. Then the refusals: a wrong secret, a tampered, expired or
re-targeted presigned URL, a date too far off, a user without access; none
may be answered by the fast path. A missing key or bucket is the handler's
error, answered alike both ways.

Args: KEY SECRET of a second user (owning nothing of the root's).
Run by tests/s3_clients.rs; exits non-zero on the first failed check."""

import datetime
import os
import sys
import time
import urllib.error
import urllib.request

import botocore.auth
from gateway_client import as_user, check, client, error_code

ENDPOINT = os.environ["S3_ENDPOINT"]
user_key, user_secret = sys.argv[1], sys.argv[2]
s3 = client()


def fast_count():
    text = urllib.request.urlopen(ENDPOINT + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("shardgate_s3_fast_gets_total "):
            return int(float(line.split()[1]))
    check(False, "shardgate_s3_fast_gets_total is in /metrics")


# The extra header that sends a request the generic way: harmless to s3s
# (it reads no such header) and not one the fast path takes.
GENERIC = {"on": False}


def generic_header(request, **_):
    if GENERIC["on"]:
        request.headers["x-shardgate-test"] = "generic"


s3.meta.events.register("before-send.s3.GetObject", generic_header)


def answer(bucket, key, generic, **kw):
    GENERIC["on"] = generic
    try:
        r = s3.get_object(Bucket=bucket, Key=key, **kw)
        return r["Body"].read(), dict(r["ResponseMetadata"]["HTTPHeaders"])
    finally:
        GENERIC["on"] = False


def same_both_ways(bucket, key, want_body, **kw):
    """GETs `key` by both paths: the fast one counted once, the generic one
    not, the same bytes and the same headers (but the date)."""
    before = fast_count()
    fast_body, fast_headers = answer(bucket, key, False, **kw)
    middle = fast_count()
    slow_body, slow_headers = answer(bucket, key, True, **kw)
    after = fast_count()
    check(middle == before + 1, f"{bucket}/{key}: the fast path answered ({before} -> {middle})")
    check(after == middle, f"{bucket}/{key}: the extra header went the generic way")
    check(fast_body == want_body, f"{bucket}/{key}: the fast path's bytes")
    check(slow_body == want_body, f"{bucket}/{key}: the generic path's bytes")
    for h in (fast_headers, slow_headers):
        h.pop("date", None)
    check(fast_headers == slow_headers,
          f"{bucket}/{key}: the same headers\n fast    {fast_headers}\n generic {slow_headers}")
    return fast_headers


def not_fast(what, fn):
    """Runs `fn`; the fast path must not have answered it."""
    before = fast_count()
    out = fn()
    check(fast_count() == before, f"{what}: not answered by the fast path")
    return out


# 1. Objects of every kind, compared both ways.
s3.create_bucket(Bucket="plain")
bodies = {
    "empty": b"",
    "small": b"x" * 100,
    "inline-limit": bytes(range(256)) * 16,
    "fragments": os.urandom(1 << 20) + b"tail",
    "dir/ü x+y=z&%.txt": b"odd key",
}
for key, body in bodies.items():
    s3.put_object(Bucket="plain", Key=key, Body=body)
    same_both_ways("plain", key, body)

s3.put_object(Bucket="plain", Key="described", Body=b"described",
              ContentType="text/plain; charset=utf-8", CacheControl="max-age=60",
              ContentDisposition='attachment; filename="d.txt"', ContentLanguage="fr",
              ContentEncoding="identity", Expires=datetime.datetime(2030, 1, 2, 3, 4, 5),
              Metadata={"color": "blue", "with-dash": "a b  c"}, Tagging="a=1&b=2",
              ChecksumAlgorithm="SHA256")
h = same_both_ways("plain", "described", b"described")
for name, want in [("content-type", "text/plain; charset=utf-8"), ("cache-control", "max-age=60"),
                   ("x-amz-meta-color", "blue"), ("x-amz-tagging-count", "2"),
                   ("content-language", "fr")]:
    check(h.get(name) == want, f"described: {name} {h.get(name)!r}")
check("x-amz-checksum-sha256" in h, f"described: its checksum is shown when asked: {h}")

# Metadata that is not plain ASCII (sent RFC 2047 encoded, stored decoded):
# the fast path leaves its encoding to s3s.
ENCODED = "=?UTF-8?B?Y2Fmw6k=?="  # "café"
s3.put_object(Bucket="plain", Key="accented", Body=b"a", Metadata={"name": ENCODED})
got = not_fast("non-ASCII metadata", lambda: s3.get_object(Bucket="plain", Key="accented"))
check(got["Metadata"].get("name") == ENCODED, f"non-ASCII metadata reads back: {got['Metadata']}")

# A multipart object.
mp = s3.create_multipart_upload(Bucket="plain", Key="multi")
parts = []
for n, chunk in enumerate([os.urandom(5 << 20), os.urandom(1000)], start=1):
    etag = s3.upload_part(Bucket="plain", Key="multi", PartNumber=n, UploadId=mp["UploadId"],
                          Body=chunk)["ETag"]
    parts.append(({"ETag": etag, "PartNumber": n}, chunk))
s3.complete_multipart_upload(Bucket="plain", Key="multi", UploadId=mp["UploadId"],
                             MultipartUpload={"Parts": [p for p, _ in parts]})
same_both_ways("plain", "multi", b"".join(c for _, c in parts))

# Versions: the latest, with its version id.
s3.create_bucket(Bucket="versioned")
s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
s3.put_object(Bucket="versioned", Key="k", Body=b"one")
v2 = s3.put_object(Bucket="versioned", Key="k", Body=b"two")["VersionId"]
h = same_both_ways("versioned", "k", b"two")
check(h.get("x-amz-version-id") == v2, f"versioned: the latest version's id: {h}")
# A named version is a query parameter: the generic path.
got = not_fast("a versionId", lambda: s3.get_object(Bucket="versioned", Key="k", VersionId=v2))
check(got["Body"].read() == b"two", "a named version reads")

# Object Lock: retention and legal hold shown alike.
s3.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
until = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).replace(microsecond=0)
s3.put_object(Bucket="locked", Key="held", Body=b"held", ObjectLockMode="GOVERNANCE",
              ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON")
h = same_both_ways("locked", "held", b"held")
check(h.get("x-amz-object-lock-mode") == "GOVERNANCE" and h.get("x-amz-object-lock-legal-hold") == "ON",
      f"locked: the lock is shown: {h}")

# Ranges and conditions go the generic way, and still work.
got = not_fast("a range", lambda: s3.get_object(Bucket="plain", Key="small", Range="bytes=0-9"))
check(got["Body"].read() == b"x" * 10, "a range reads")
small_etag = s3.head_object(Bucket="plain", Key="small")["ETag"]
code, status = not_fast("an If-None-Match", lambda: error_code(
    s3.get_object, Bucket="plain", Key="small", IfNoneMatch=small_etag))
check(status == 304, f"an If-None-Match of the current ETag: 304, got {code} {status}")

# 2. Presigned URLs: taken when valid, refused the generic way otherwise.
url = s3.generate_presigned_url("get_object", Params={"Bucket": "plain", "Key": "dir/ü x+y=z&%.txt"},
                                ExpiresIn=600)
before = fast_count()
check(urllib.request.urlopen(url, timeout=10).read() == b"odd key", "a presigned GET reads")
check(fast_count() == before + 1, "a presigned GET takes the fast path")


def refused(what, target, want_code, want_status=403):
    def fetch():
        try:
            urllib.request.urlopen(target, timeout=10)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        return 200, ""
    status, body = not_fast(what, fetch)
    check(status == want_status and f"<Code>{want_code}</Code>" in body,
          f"{what}: {want_status} {want_code}, got {status} {body[:300]}")


last = url[-1]
refused("a tampered signature", url[:-1] + ("0" if last != "0" else "1"), "SignatureDoesNotMatch")
other = s3.generate_presigned_url("get_object", Params={"Bucket": "plain", "Key": "small"}, ExpiresIn=600)
refused("a signature for another key", other.replace("/plain/small?", "/plain/described?"),
        "SignatureDoesNotMatch")
short = s3.generate_presigned_url("get_object", Params={"Bucket": "plain", "Key": "small"}, ExpiresIn=1)
time.sleep(2.5)
refused("an expired URL", short, "AccessDenied")

# 3. Header signing refused the generic way.
wrong = as_user(os.environ["AWS_ACCESS_KEY_ID"], "not-the-secret")
code, _ = not_fast("a wrong secret", lambda: error_code(wrong.get_object, Bucket="plain", Key="small"))
check(code == "SignatureDoesNotMatch", f"a wrong secret: {code}")

real_now = botocore.auth.get_current_datetime
botocore.auth.get_current_datetime = lambda: real_now() - datetime.timedelta(minutes=20)
try:
    code, _ = not_fast("a date 20 minutes old",
                       lambda: error_code(s3.get_object, Bucket="plain", Key="small"))
finally:
    botocore.auth.get_current_datetime = real_now
check(code == "RequestTimeTooSkewed", f"a date 20 minutes old: {code}")

# 4. Access: another user may not read the root's bucket, may read its own.
stranger = as_user(user_key, user_secret)
code, _ = not_fast("another user's bucket",
                   lambda: error_code(stranger.get_object, Bucket="plain", Key="small"))
check(code == "AccessDenied", f"another user's bucket: {code}")
stranger.create_bucket(Bucket="strangers")
stranger.put_object(Bucket="strangers", Key="own", Body=b"own")
before = fast_count()
check(stranger.get_object(Bucket="strangers", Key="own")["Body"].read() == b"own", "a user reads its own")
check(fast_count() == before + 1, "a user's GET of its own object takes the fast path")

# 5. A missing key and a missing bucket: the handler's errors, answered by
# the fast path with s3s's own serializer, the same both ways.
for bucket, key, want in [("plain", "nope", ("NoSuchKey", 404)), ("nobucket", "k", ("NoSuchBucket", 404))]:
    before = fast_count()
    fast = error_code(s3.get_object, Bucket=bucket, Key=key)
    middle = fast_count()
    GENERIC["on"] = True
    try:
        generic = error_code(s3.get_object, Bucket=bucket, Key=key)
    finally:
        GENERIC["on"] = False
    check(fast == want and generic == want, f"{bucket}/{key}: {want}, got {fast} and {generic}")
    check(middle == before + 1 and fast_count() == middle,
          f"{bucket}/{key}: the fast path answered the first, not the second")

print("fast path: ok")
