"""boto3 against a running shardgate: presigned URLs over plain HTTP,
conditional requests, listings, multipart, and every user mistake getting
its S3 error code. Run by tests/s3_clients.rs with S3_ENDPOINT and AWS_*
set; exits non-zero on the first failed check."""

import base64
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError
from gateway_client import error_code

ENDPOINT = os.environ["S3_ENDPOINT"]
KEY = os.environ["AWS_ACCESS_KEY_ID"]
SECRET = os.environ["AWS_SECRET_ACCESS_KEY"]


def client(key=KEY, secret=SECRET, **cfg):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", retries={"max_attempts": 1}, **cfg),
    )


s3 = client()
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print("FAILED:", what, file=sys.stderr)
        sys.exit(1)
    checks += 1


def expect_error(code, fn, *args, **kwargs):
    got, status = error_code(fn, *args, **kwargs)
    check(got == code, f"{fn.__name__}: expected {code}, got {got} ({status})")
    return status


def http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


B = "boto-suite"
s3.create_bucket(Bucket=B)
expect_error("BucketAlreadyOwnedByYou", s3.create_bucket, Bucket=B)
check(any(b["Name"] == B for b in s3.list_buckets()["Buckets"]), "bucket listed")

# --- user mistakes: the right code, and the server stays up ---
expect_error("SignatureDoesNotMatch", client(secret="wrong" + SECRET[5:]).list_buckets)
expect_error("InvalidAccessKeyId", client(key="NOSUCHKEY").list_buckets)
for bad in ["ab", "UPPER", "-lead", "a" * 64, "has_underscore"]:
    status, body = http("PUT", f"{ENDPOINT}/{bad}")
    # Unsigned, so any 4xx is acceptable for the raw call; the signed one
    # below must say InvalidBucketName.
    check(400 <= status < 500, f"raw PUT /{bad} gave {status}")
    expect_error("InvalidBucketName", s3.create_bucket, Bucket=bad)
    try:
        s3.create_bucket(Bucket=bad)
    except ClientError as e:
        check("3 to 63 characters" in e.response["Error"]["Message"], f"InvalidBucketName has a message: {e.response['Error']}")
expect_error("NoSuchBucket", s3.list_objects_v2, Bucket="no-such-bucket")
expect_error("NoSuchKey", s3.get_object, Bucket=B, Key="missing")
expect_error("404", s3.head_object, Bucket=B, Key="missing")

body = os.urandom(100_000)
md5 = hashlib.md5(body).hexdigest()
put = s3.put_object(
    Bucket=B,
    Key="obj",
    Body=body,
    ContentType="text/x-test",
    Metadata={"Color": "blue", "n": "1"},
    CacheControl="no-cache",
    ContentDisposition="attachment; filename=x.bin",
    ContentLanguage="fr",
)
check(put["ETag"] == f'"{md5}"', "single PUT ETag is the body MD5")
head = s3.head_object(Bucket=B, Key="obj")
check(head["ContentLength"] == len(body), "head length")
check(head["ContentType"] == "text/x-test", "content type round-trips")
check(head["Metadata"] == {"color": "blue", "n": "1"}, f"metadata round-trips: {head['Metadata']}")
check(head["CacheControl"] == "no-cache", "cache-control round-trips")
check(head["ContentDisposition"] == "attachment; filename=x.bin", "content-disposition")
check(head["ContentLanguage"] == "fr", "content-language")

# Ranges
get = lambda r: s3.get_object(Bucket=B, Key="obj", Range=r)["Body"].read()
check(get("bytes=0-0") == body[:1], "first byte")
check(get("bytes=99990-") == body[99990:], "open-ended range")
check(get("bytes=-10") == body[-10:], "suffix range")
check(get("bytes=65530-65545") == body[65530:65546], "range across a chunk boundary")
expect_error("InvalidRange", s3.get_object, Bucket=B, Key="obj", Range="bytes=100000-100001")

# Content-MD5
bad_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
expect_error("BadDigest", s3.put_object, Bucket=B, Key="digest", Body=b"data", ContentMD5=bad_md5)
expect_error("NoSuchKey", s3.get_object, Bucket=B, Key="digest")
good_md5 = base64.b64encode(hashlib.md5(b"data").digest()).decode()
s3.put_object(Bucket=B, Key="digest", Body=b"data", ContentMD5=good_md5)

# Additional checksums: verified on the way in, returned on a full GET
data = b"checksummed body " * 1000
r = s3.put_object(Bucket=B, Key="sum", Body=data, ChecksumAlgorithm="SHA256")
want = base64.b64encode(hashlib.sha256(data).digest()).decode()
check(r.get("ChecksumSHA256") == want, f"PUT returns the verified SHA256 {r.get('ChecksumSHA256')}")
g = s3.get_object(Bucket=B, Key="sum", ChecksumMode="ENABLED")
check(g["Body"].read() == data and g.get("ChecksumSHA256") == want, "GET returns the stored SHA256")
g = s3.get_object(Bucket=B, Key="sum", ChecksumMode="ENABLED", Range="bytes=0-9")
check("ChecksumSHA256" not in g, "no whole-object checksum on a range")
expect_error("BadDigest", s3.put_object, Bucket=B, Key="badsum", Body=data, ChecksumCRC32="AAAAAA==")
expect_error("NoSuchKey", s3.get_object, Bucket=B, Key="badsum")
s3.copy_object(Bucket=B, Key="sum-copy", CopySource={"Bucket": B, "Key": "sum"}, MetadataDirective="REPLACE")
check(s3.head_object(Bucket=B, Key="sum-copy", ChecksumMode="ENABLED").get("ChecksumSHA256") == want, "a copy keeps the checksum")

# Conditional GET / HEAD
etag = put["ETag"]
lm = head["LastModified"]
check(s3.get_object(Bucket=B, Key="obj", IfMatch=etag)["Body"].read() == body, "If-Match hit")
expect_error("PreconditionFailed", s3.get_object, Bucket=B, Key="obj", IfMatch='"nope"')
expect_error("304", s3.head_object, Bucket=B, Key="obj", IfNoneMatch=etag)
code, status = error_code(s3.get_object, Bucket=B, Key="obj", IfNoneMatch=etag)
check(status == 304, f"If-None-Match hit gives 304, got {status}")
code, status = error_code(s3.get_object, Bucket=B, Key="obj", IfModifiedSince=lm)
check(status == 304, f"If-Modified-Since (not modified) gives 304, got {status}")
past = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 3600))
expect_error("PreconditionFailed", s3.get_object, Bucket=B, Key="obj", IfUnmodifiedSince=past)
check(s3.get_object(Bucket=B, Key="obj", IfModifiedSince=past)["ContentLength"] == len(body), "modified since an hour ago")

# Conditional PUT
expect_error("PreconditionFailed", s3.put_object, Bucket=B, Key="obj", Body=b"x", IfNoneMatch="*")
s3.put_object(Bucket=B, Key="fresh", Body=b"x", IfNoneMatch="*")

# Presigned URLs over plain HTTP
url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "obj"}, ExpiresIn=300)
status, got = http("GET", url)
check(status == 200 and got == body, f"presigned GET ({status})")
url = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "presigned"}, ExpiresIn=300)
status, _ = http("PUT", url, data=b"via presigned put")
check(status == 200, f"presigned PUT ({status})")
check(s3.get_object(Bucket=B, Key="presigned")["Body"].read() == b"via presigned put", "presigned PUT stored")
url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "obj"}, ExpiresIn=1)
time.sleep(2.5)
status, err = http("GET", url)
check(status == 403 and b"AccessDenied" in err, f"expired presigned URL gives 403 AccessDenied ({status} {err[:200]})")
url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "obj"}, ExpiresIn=300)
flipped = url[:-1] + ("0" if url[-1] != "0" else "1")
check("X-Amz-Signature=" in url.rsplit("&", 1)[-1], "signature is the last parameter")
status, err = http("GET", flipped)
check(status == 403 and b"SignatureDoesNotMatch" in err, f"tampered presigned URL ({status})")

# Copy: metadata COPY and REPLACE
s3.copy_object(Bucket=B, Key="copy", CopySource={"Bucket": B, "Key": "obj"})
h = s3.head_object(Bucket=B, Key="copy")
check(h["Metadata"] == {"color": "blue", "n": "1"} and h["ContentType"] == "text/x-test", "COPY keeps metadata")
check(s3.get_object(Bucket=B, Key="copy")["Body"].read() == body, "copy content")
s3.copy_object(
    Bucket=B, Key="copy", CopySource={"Bucket": B, "Key": "obj"},
    MetadataDirective="REPLACE", Metadata={"new": "yes"}, ContentType="app/new",
)
h = s3.head_object(Bucket=B, Key="copy")
check(h["Metadata"] == {"new": "yes"} and h["ContentType"] == "app/new", "REPLACE sets metadata")
expect_error("InvalidRequest", s3.copy_object, Bucket=B, Key="obj", CopySource={"Bucket": B, "Key": "obj"})
expect_error("PreconditionFailed", s3.copy_object, Bucket=B, Key="c2", CopySource={"Bucket": B, "Key": "obj"}, CopySourceIfMatch='"nope"')
expect_error("NoSuchKey", s3.copy_object, Bucket=B, Key="c2", CopySource={"Bucket": B, "Key": "missing"})

# Listings: V2 with continuation, V1 with marker, delimiters, start-after
L = "list-suite"
s3.create_bucket(Bucket=L)
keys = sorted([f"a/{i:02}" for i in range(7)] + [f"b/c/{i}" for i in range(3)] + ["top1", "top2", "ü/x", "sp ace"])
for k in keys:
    s3.put_object(Bucket=L, Key=k, Body=k.encode())
seen, token = [], None
while True:
    kw = {"ContinuationToken": token} if token else {}
    page = s3.list_objects_v2(Bucket=L, MaxKeys=3, **kw)
    check(page["KeyCount"] <= 3, "page size")
    seen += [o["Key"] for o in page.get("Contents", [])]
    if not page["IsTruncated"]:
        break
    token = page["NextContinuationToken"]
check(seen == sorted(keys, key=lambda k: k.encode()), f"V2 paging lists every key in order: {seen}")
page = s3.list_objects_v2(Bucket=L, Delimiter="/")
check([p["Prefix"] for p in page["CommonPrefixes"]] == ["a/", "b/", "ü/"], f"common prefixes {page.get('CommonPrefixes')}")
check([o["Key"] for o in page["Contents"]] == ["sp ace", "top1", "top2"], "top-level keys")
page = s3.list_objects_v2(Bucket=L, Prefix="b/", Delimiter="/")
check([p["Prefix"] for p in page["CommonPrefixes"]] == ["b/c/"], "nested prefix")
page = s3.list_objects_v2(Bucket=L, StartAfter="a/05")
check(page["Contents"][0]["Key"] == "a/06", "start-after")
seen, marker = [], ""
while True:
    page = s3.list_objects(Bucket=L, Delimiter="/", MaxKeys=2, Marker=marker)
    seen += [o["Key"] for o in page.get("Contents", [])] + [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    if not page["IsTruncated"]:
        break
    marker = page["NextMarker"]
check(sorted(seen) == ["a/", "b/", "sp ace", "top1", "top2", "ü/"], f"V1 paging with delimiter: {seen}")
check(s3.list_objects_v2(Bucket=L, MaxKeys=0)["KeyCount"] == 0, "max-keys 0")
expect_error("InvalidArgument", s3.list_objects_v2, Bucket=L, ContinuationToken="!!not-a-token")

# DeleteObjects: verbose and quiet; DeleteBucket refuses a non-empty bucket
expect_error("BucketNotEmpty", s3.delete_bucket, Bucket=L)
out = s3.delete_objects(Bucket=L, Delete={"Objects": [{"Key": k} for k in keys[:5]] + [{"Key": "never-existed"}]})
check(len(out["Deleted"]) == 6, "verbose delete lists each key")
out = s3.delete_objects(Bucket=L, Delete={"Objects": [{"Key": k} for k in keys[5:]], "Quiet": True})
check("Deleted" not in out or out["Deleted"] == [], "quiet delete lists nothing")
check(s3.list_objects_v2(Bucket=L)["KeyCount"] == 0, "all deleted")
s3.delete_bucket(Bucket=L)
code, status = error_code(s3.head_bucket, Bucket=L)
check(status == 404, f"deleted bucket HEAD gives 404 ({status})")

# Malformed XML body
signed = client()
def send_raw_delete():
    # A DeleteObjects call whose XML is broken on purpose.
    def broken(request, **kwargs):
        request.data = b"<Delete><Object><Key>x</Key></Obj"
        request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(request.data).digest()).decode()
        request.headers["Content-Length"] = str(len(request.data))
    signed.meta.events.register_first("before-sign.s3.DeleteObjects", broken)
    return signed.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "x"}]})
expect_error("MalformedXML", send_raw_delete)

# Multipart: parts as segments, S3's ETag, list, abort, completion rules
M = "multi/part.bin"
part_size = 5 * 1024 * 1024
parts_data = [os.urandom(part_size), os.urandom(part_size), os.urandom(1234)]
up = s3.create_multipart_upload(Bucket=B, Key=M, ContentType="video/x-test", Metadata={"m": "1"})["UploadId"]
etags = []
for i, data in enumerate(parts_data, 1):
    r = s3.upload_part(Bucket=B, Key=M, UploadId=up, PartNumber=i, Body=data)
    check(r["ETag"] == f'"{hashlib.md5(data).hexdigest()}"', "part ETag is its MD5")
    etags.append(r["ETag"])
lp = s3.list_parts(Bucket=B, Key=M, UploadId=up, MaxParts=2)
check([p["PartNumber"] for p in lp["Parts"]] == [1, 2] and lp["IsTruncated"], "list parts page 1")
lp = s3.list_parts(Bucket=B, Key=M, UploadId=up, PartNumberMarker=lp["NextPartNumberMarker"])
check([p["PartNumber"] for p in lp["Parts"]] == [3] and lp["Parts"][0]["Size"] == 1234, "list parts page 2")
ups = s3.list_multipart_uploads(Bucket=B)["Uploads"]
check([u["UploadId"] for u in ups] == [up], "upload listed")
expect_error("InvalidPartOrder", s3.complete_multipart_upload, Bucket=B, Key=M, UploadId=up,
             MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]})
expect_error("InvalidPart", s3.complete_multipart_upload, Bucket=B, Key=M, UploadId=up,
             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"0000"'}]})
done = s3.complete_multipart_upload(
    Bucket=B, Key=M, UploadId=up,
    MultipartUpload={"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]},
)
want = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for e in etags)).hexdigest() + "-3"
check(done["ETag"] == f'"{want}"', f"multipart ETag {done['ETag']} == {want}")
whole = b"".join(parts_data)
got = s3.get_object(Bucket=B, Key=M)
check(got["Body"].read() == whole and got["ContentType"] == "video/x-test" and got["Metadata"] == {"m": "1"}, "multipart object")
check(s3.get_object(Bucket=B, Key=M, PartNumber=2)["Body"].read() == parts_data[1], "GET partNumber=2")
r = s3.get_object(Bucket=B, Key=M, Range=f"bytes={part_size - 5}-{part_size + 5}")["Body"].read()
check(r == whole[part_size - 5: part_size + 6], "range across parts")
expect_error("NoSuchUpload", s3.upload_part, Bucket=B, Key=M, UploadId=up, PartNumber=4, Body=b"late")
expect_error("NoSuchUpload", s3.list_parts, Bucket=B, Key=M, UploadId=up)
up2 = s3.create_multipart_upload(Bucket=B, Key="aborted")["UploadId"]
s3.upload_part(Bucket=B, Key="aborted", UploadId=up2, PartNumber=1, Body=b"x" * 100)
expect_error("InvalidArgument", s3.upload_part, Bucket=B, Key="aborted", UploadId=up2, PartNumber=0, Body=b"x")
expect_error("InvalidArgument", s3.upload_part, Bucket=B, Key="aborted", UploadId=up2, PartNumber=10001, Body=b"x")
s3.abort_multipart_upload(Bucket=B, Key="aborted", UploadId=up2)
expect_error("NoSuchUpload", s3.abort_multipart_upload, Bucket=B, Key="aborted", UploadId=up2)
check(s3.list_multipart_uploads(Bucket=B).get("Uploads", []) == [], "no uploads left")
up3 = s3.create_multipart_upload(Bucket=B, Key="small-parts")["UploadId"]
e1 = s3.upload_part(Bucket=B, Key="small-parts", UploadId=up3, PartNumber=1, Body=b"a" * 10)["ETag"]
e2 = s3.upload_part(Bucket=B, Key="small-parts", UploadId=up3, PartNumber=2, Body=b"b" * 10)["ETag"]
expect_error("EntityTooSmall", s3.complete_multipart_upload, Bucket=B, Key="small-parts", UploadId=up3,
             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
s3.abort_multipart_upload(Bucket=B, Key="small-parts", UploadId=up3)
# An empty last part: GET ?partNumber= answers like HEAD (200, length 0)
up4 = s3.create_multipart_upload(Bucket=B, Key="empty-tail")["UploadId"]
f1 = s3.upload_part(Bucket=B, Key="empty-tail", UploadId=up4, PartNumber=1, Body=parts_data[0])["ETag"]
f2 = s3.upload_part(Bucket=B, Key="empty-tail", UploadId=up4, PartNumber=2, Body=b"")["ETag"]
s3.complete_multipart_upload(Bucket=B, Key="empty-tail", UploadId=up4,
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": f1}, {"PartNumber": 2, "ETag": f2}]})
h = s3.head_object(Bucket=B, Key="empty-tail", PartNumber=2)
g = s3.get_object(Bucket=B, Key="empty-tail", PartNumber=2)
check(h["ContentLength"] == 0 and g["ContentLength"] == 0 and g["Body"].read() == b""
      and g["PartsCount"] == h["PartsCount"] == 2, "GET of an empty part answers like HEAD")
check(s3.get_object(Bucket=B, Key="empty-tail")["Body"].read() == parts_data[0], "object with an empty last part")

# Key too long, metadata too large
expect_error("KeyTooLongError", s3.put_object, Bucket=B, Key="k" * 1025, Body=b"x")
expect_error("InvalidArgument", s3.put_object, Bucket=B, Key="a\x00b", Body=b"x")
expect_error("MetadataTooLarge", s3.put_object, Bucket=B, Key="meta", Body=b"x", Metadata={"big": "v" * 2100})

# Still up, and the earlier object intact
check(s3.get_object(Bucket=B, Key="obj")["Body"].read() == body, "server still serves after the bad requests")
print(f"boto3 suite: {checks} checks passed")
