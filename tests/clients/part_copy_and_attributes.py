"""boto3 against a running shardgate: UploadPartCopy, then
GetObjectAttributes. Parts copied from
byte ranges of one object and whole from an older version of another, then
completed, read back as the concatenation; the copy-source version is
echoed; a range past the source is InvalidRange, a malformed one
InvalidArgument; a missing source NoSuchKey, a missing upload NoSuchUpload,
and a refused part leaves the upload as it was. GetObjectAttributes
returns the ETag, size, storage class and checksum asked for, and a
multipart object's parts page by page, of the current or an older version.
CompleteMultipartUpload honours If-Match and If-None-Match.
Run by tests/s3_clients.rs;
exits non-zero on the first failed check."""

import random
import sys

from gateway_client import check, client, expect_error

s3 = client()
MIB = 1 << 20
rng = random.Random(7)
big = rng.randbytes(12 * MIB + 123)
old, new = b"the old version " * 1000, b"the new version"

s3.create_bucket(Bucket="partcopy")
s3.put_bucket_versioning(Bucket="partcopy", VersioningConfiguration={"Status": "Enabled"})
s3.put_object(Bucket="partcopy", Key="big", Body=big)
old_id = s3.put_object(Bucket="partcopy", Key="small", Body=old)["VersionId"]
s3.put_object(Bucket="partcopy", Key="small", Body=new)

upload = s3.create_multipart_upload(Bucket="partcopy", Key="joined")["UploadId"]
cut = 5 * MIB + 17


def copy(number, source, **kw):
    return s3.upload_part_copy(Bucket="partcopy", Key="joined", UploadId=upload, PartNumber=number,
                               CopySource=source, **kw)


p1 = copy(1, {"Bucket": "partcopy", "Key": "big"}, CopySourceRange=f"bytes=0-{cut - 1}")
p2 = copy(2, {"Bucket": "partcopy", "Key": "big"}, CopySourceRange=f"bytes={cut}-{len(big) - 1}")
p3 = copy(3, {"Bucket": "partcopy", "Key": "small", "VersionId": old_id})
check(p3.get("CopySourceVersionId") == old_id, "the source version is echoed")

# Mistakes: a clear error each, and the upload unchanged.
expect_error("InvalidRange", copy, 4, {"Bucket": "partcopy", "Key": "big"},
             CopySourceRange=f"bytes=0-{len(big)}")
expect_error("InvalidArgument", copy, 4, {"Bucket": "partcopy", "Key": "big"},
             CopySourceRange="bytes=9-3")
expect_error("NoSuchKey", copy, 4, {"Bucket": "partcopy", "Key": "missing"})
expect_error("NoSuchUpload", s3.upload_part_copy, Bucket="partcopy", Key="joined", UploadId="nope",
             PartNumber=4, CopySource={"Bucket": "partcopy", "Key": "big"})
parts = s3.list_parts(Bucket="partcopy", Key="joined", UploadId=upload)["Parts"]
check([p["PartNumber"] for p in parts] == [1, 2, 3], f"three parts: {parts}")
check([p["Size"] for p in parts] == [cut, len(big) - cut, len(old)], "each part its range's size")

s3.complete_multipart_upload(Bucket="partcopy", Key="joined", UploadId=upload, MultipartUpload={
    "Parts": [{"PartNumber": n, "ETag": p["CopyPartResult"]["ETag"]}
              for n, p in [(1, p1), (2, p2), (3, p3)]]})
got = s3.get_object(Bucket="partcopy", Key="joined")["Body"].read()
check(got == big + old, "the completed object is the copied ranges, in order")

# GetObjectAttributes: the parts, paged.
ALL = ["ETag", "ObjectSize", "ObjectParts", "StorageClass", "Checksum"]
a = s3.get_object_attributes(Bucket="partcopy", Key="joined", ObjectAttributes=ALL, MaxParts=2)
etag = s3.head_object(Bucket="partcopy", Key="joined")["ETag"].strip('"')
check(a["ETag"].strip('"') == etag and a["ObjectSize"] == len(big) + len(old), f"ETag and size: {a}")
check(a["StorageClass"] == "STANDARD", "storage class")
p = a["ObjectParts"]
check(p["TotalPartsCount"] == 3 and p["IsTruncated"] and p["NextPartNumberMarker"] == 2,
      f"the first page of parts: {p}")
check([x["Size"] for x in p["Parts"]] == [cut, len(big) - cut], "the first two parts' sizes")
rest = s3.get_object_attributes(Bucket="partcopy", Key="joined", ObjectAttributes=["ObjectParts"],
                                PartNumberMarker=2)["ObjectParts"]
check(not rest["IsTruncated"] and [x["PartNumber"] for x in rest["Parts"]] == [3], f"the rest: {rest}")

# A checksummed PUT: its checksum; an older version's attributes by id.
s3.put_object(Bucket="partcopy", Key="summed", Body=b"sum me", ChecksumAlgorithm="SHA256")
a = s3.get_object_attributes(Bucket="partcopy", Key="summed", ObjectAttributes=["Checksum"])
want = s3.head_object(Bucket="partcopy", Key="summed", ChecksumMode="ENABLED")["ChecksumSHA256"]
check(a["Checksum"]["ChecksumSHA256"] == want, f"the stored checksum: {a}")
a = s3.get_object_attributes(Bucket="partcopy", Key="small", VersionId=old_id,
                             ObjectAttributes=["ObjectSize"])
check(a["ObjectSize"] == len(old) and a["VersionId"] == old_id, f"an older version's size: {a}")
expect_error("NoSuchKey", s3.get_object_attributes, Bucket="partcopy", Key="missing",
             ObjectAttributes=["ETag"])

# Conditional completion: If-Match / If-None-Match on the key's current
# object, checked when the upload completes.
def upload_one(key, body):
    up = s3.create_multipart_upload(Bucket="partcopy", Key=key)["UploadId"]
    part = s3.upload_part(Bucket="partcopy", Key=key, UploadId=up, PartNumber=1, Body=body)
    return up, {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}


current = s3.head_object(Bucket="partcopy", Key="joined")["ETag"]
up, parts = upload_one("joined", b"conditional")
expect_error("PreconditionFailed", s3.complete_multipart_upload, Bucket="partcopy", Key="joined",
             UploadId=up, MultipartUpload=parts, IfMatch='"0123"')
expect_error("PreconditionFailed", s3.complete_multipart_upload, Bucket="partcopy", Key="joined",
             UploadId=up, MultipartUpload=parts, IfNoneMatch="*")
check(s3.get_object(Bucket="partcopy", Key="joined")["Body"].read() == big + old,
      "a refused completion changed nothing")
s3.complete_multipart_upload(Bucket="partcopy", Key="joined", UploadId=up, MultipartUpload=parts,
                             IfMatch=current)
check(s3.get_object(Bucket="partcopy", Key="joined")["Body"].read() == b"conditional",
      "If-Match on the current ETag completes")

print("part_copy_and_attributes: all checks passed", file=sys.stderr)
