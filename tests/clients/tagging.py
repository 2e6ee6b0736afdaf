"""boto3 against a running shardgate: object and bucket tagging. Tags set on PUT, on
CreateMultipartUpload and by PutObjectTagging read back; copies keep or
replace them; GET counts them; S3's limits give InvalidTag or MalformedXML;
a new version starts without the old one's tags. Run by
tests/s3_clients.rs; exits non-zero on the first failed check."""

import sys

from gateway_client import check, client, error_code, expect_error

s3 = client()


def tags_of(key, bucket="tags"):
    got = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {t["Key"]: t["Value"] for t in got}


s3.create_bucket(Bucket="tags")

# On PUT, URL-encoded; GET counts them.
s3.put_object(Bucket="tags", Key="a", Body=b"alpha", Tagging="team=data%20eng&tier=cold")
check(tags_of("a") == {"team": "data eng", "tier": "cold"}, "tags from x-amz-tagging")
check(s3.get_object(Bucket="tags", Key="a")["TagCount"] == 2, "GET counts the tags")
check("TagCount" not in s3.put_object(Bucket="tags", Key="plain", Body=b"p") and
      "TagCount" not in s3.get_object(Bucket="tags", Key="plain"), "no tags, no count")
check(tags_of("plain") == {}, "an untagged object has an empty set")

# PutObjectTagging replaces the whole set; the object is unchanged.
etag = s3.head_object(Bucket="tags", Key="a")["ETag"]
# Not versioning: the object is the null version.
version = "null"
s3.put_object_tagging(Bucket="tags", Key="a", Tagging={"TagSet": [{"Key": "owner", "Value": "ops"}]})
check(tags_of("a") == {"owner": "ops"}, "PutObjectTagging replaces the set")
check(s3.head_object(Bucket="tags", Key="a")["ETag"] == etag, "retagging keeps the ETag")
check(s3.get_object(Bucket="tags", Key="a")["Body"].read() == b"alpha", "retagging keeps the bytes")
s3.put_object_tagging(Bucket="tags", Key="a", VersionId=version,
                      Tagging={"TagSet": [{"Key": "owner", "Value": "dev"}]})
check(tags_of("a") == {"owner": "dev"}, "tagging the null version by id")
expect_error("NoSuchVersion", s3.put_object_tagging, Bucket="tags", Key="a",
             VersionId="0" * 32, Tagging={"TagSet": []})
expect_error("InvalidArgument", s3.get_object_tagging, Bucket="tags", Key="a", VersionId="nope")

# DeleteObjectTagging empties it.
s3.delete_object_tagging(Bucket="tags", Key="a")
check(tags_of("a") == {}, "DeleteObjectTagging empties the set")

# A new version starts with its own tags only.
s3.put_object_tagging(Bucket="tags", Key="a", Tagging={"TagSet": [{"Key": "old", "Value": "1"}]})
s3.put_object(Bucket="tags", Key="a", Body=b"beta")
check(tags_of("a") == {}, "an overwrite does not inherit tags")

# Copies: COPY (the default) keeps the source's, REPLACE takes the header.
s3.put_object(Bucket="tags", Key="src", Body=b"source", Tagging="k=v")
s3.copy_object(Bucket="tags", Key="kept", CopySource={"Bucket": "tags", "Key": "src"})
check(tags_of("kept") == {"k": "v"}, "a copy keeps the source's tags")
s3.copy_object(Bucket="tags", Key="replaced", CopySource={"Bucket": "tags", "Key": "src"},
               TaggingDirective="REPLACE", Tagging="n=w")
check(tags_of("replaced") == {"n": "w"}, "REPLACE takes x-amz-tagging")
s3.copy_object(Bucket="tags", Key="none", CopySource={"Bucket": "tags", "Key": "src"},
               TaggingDirective="REPLACE")
check(tags_of("none") == {}, "REPLACE without a header: no tags")

# Multipart: the tags of CreateMultipartUpload land on the completed object.
up = s3.create_multipart_upload(Bucket="tags", Key="mp", Tagging="stage=raw")
part = s3.upload_part(Bucket="tags", Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 100)
s3.complete_multipart_upload(Bucket="tags", Key="mp", UploadId=up["UploadId"],
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
check(tags_of("mp") == {"stage": "raw"}, "multipart tags")
check(s3.head_object(Bucket="tags", Key="mp")["Metadata"] == {}, "the pending tags are not metadata")

# S3's rules.
eleven = "&".join(f"k{i}=v" for i in range(11))
expect_error("InvalidTag", s3.put_object, Bucket="tags", Key="bad", Body=b"", Tagging=eleven)
expect_error("InvalidTag", s3.put_object, Bucket="tags", Key="bad", Body=b"", Tagging="a=1&a=2")
expect_error("InvalidTag", s3.put_object, Bucket="tags", Key="bad", Body=b"", Tagging="aws:x=1")
expect_error("InvalidTag", s3.put_object_tagging, Bucket="tags", Key="plain",
             Tagging={"TagSet": [{"Key": "k" * 129, "Value": "v"}]})
expect_error("InvalidTag", s3.put_object_tagging, Bucket="tags", Key="plain",
             Tagging={"TagSet": [{"Key": "k", "Value": "v" * 257}]})
expect_error("InvalidTag", s3.create_multipart_upload, Bucket="tags", Key="bad", Tagging="a=<b>")
check(error_code(s3.head_object, Bucket="tags", Key="bad")[1] == 404, "a refused PUT stored nothing")
expect_error("NoSuchKey", s3.get_object_tagging, Bucket="tags", Key="missing")
expect_error("NoSuchKey", s3.put_object_tagging, Bucket="tags", Key="missing",
             Tagging={"TagSet": []})
expect_error("NoSuchBucket", s3.get_object_tagging, Bucket="missing", Key="a")
check(tags_of("plain") == {}, "refused tag sets changed nothing")

# Bucket tagging: up to 50 tags, replaced whole, NoSuchTagSet when none.
expect_error("NoSuchTagSet", s3.get_bucket_tagging, Bucket="tags")
fifty = [{"Key": f"k{i}", "Value": f"v{i}"} for i in range(50)]
s3.put_bucket_tagging(Bucket="tags", Tagging={"TagSet": fifty})
got = s3.get_bucket_tagging(Bucket="tags")["TagSet"]
check({t["Key"]: t["Value"] for t in got} == {t["Key"]: t["Value"] for t in fifty},
      "a bucket keeps 50 tags")
s3.put_bucket_tagging(Bucket="tags", Tagging={"TagSet": [{"Key": "cost", "Value": "ops"}]})
check(s3.get_bucket_tagging(Bucket="tags")["TagSet"] == [{"Key": "cost", "Value": "ops"}],
      "PutBucketTagging replaces the set")
expect_error("InvalidTag", s3.put_bucket_tagging, Bucket="tags",
             Tagging={"TagSet": fifty + [{"Key": "k50", "Value": "v"}]})
expect_error("InvalidTag", s3.put_bucket_tagging, Bucket="tags",
             Tagging={"TagSet": [{"Key": "aws:x", "Value": "v"}]})
check(s3.get_bucket_tagging(Bucket="tags")["TagSet"] == [{"Key": "cost", "Value": "ops"}],
      "a refused set changes nothing")
check(tags_of("plain") == {}, "bucket tags are not object tags")
s3.delete_bucket_tagging(Bucket="tags")
expect_error("NoSuchTagSet", s3.get_bucket_tagging, Bucket="tags")
expect_error("NoSuchBucket", s3.get_bucket_tagging, Bucket="missing")

print("tagging: all checks passed", file=sys.stderr)
