"""boto3 against a running shardgate: bucket versioning as AWS S3 does it.
Get/PutBucketVersioning (unset, Enabled, Suspended, a bad status); the
"null" version of unversioned buckets; every PUT of an Enabled bucket a new
version, read back by id; ListObjectVersions (newest first, IsLatest,
delete markers, KeyMarker/VersionIdMarker pagination, Delimiter); DELETE
without an id adds a delete marker (404 on GET, 405 on GET of the marker),
deleting the marker or the current version by id brings the previous one
back; NoSuchVersion and InvalidArgument for unknown and malformed ids; copy
of a version; tags per version; DeleteObjects with and without ids; the
single null version of a Suspended bucket; BucketNotEmpty while versions
remain; multipart uploads get a version. Run by tests/s3_clients.rs; exits
non-zero on the first failed check."""

import sys

from botocore.exceptions import ParamValidationError

from gateway_client import check, client, error_code, expect_error

s3 = client()


def read(bucket, key, **kw):
    """The bytes and the version id of a GET."""
    r = s3.get_object(Bucket=bucket, Key=key, **kw)
    return r["Body"].read(), r.get("VersionId")


def listing(bucket, **kw):
    """Versions and DeleteMarkers of one ListObjectVersions page."""
    r = s3.list_object_versions(Bucket=bucket, **kw)
    return r.get("Versions", []), r.get("DeleteMarkers", [])


def keys(bucket):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def put_id(bucket, key, body):
    vid = s3.put_object(Bucket=bucket, Key=key, Body=body).get("VersionId")
    check(isinstance(vid, str) and vid and vid != "null", f"PUT {key} in {bucket}: a version id, got {vid!r}")
    return vid


# 1. The versioning configuration.
s3.create_bucket(Bucket="ver")
check("Status" not in s3.get_bucket_versioning(Bucket="ver"), "a new bucket has no versioning Status")
s3.put_bucket_versioning(Bucket="ver", VersioningConfiguration={"Status": "Enabled"})
check(s3.get_bucket_versioning(Bucket="ver").get("Status") == "Enabled", "Status Enabled reads back")
try:
    expect_error("MalformedXML", s3.put_bucket_versioning, Bucket="ver",
                 VersioningConfiguration={"Status": "Bogus"})
except ParamValidationError:
    pass  # botocore refused it client-side: nothing reached the gateway
check(s3.get_bucket_versioning(Bucket="ver").get("Status") == "Enabled", "a refused status changed nothing")

# 2. An unversioned bucket: no version ids, but "null" addresses the object.
s3.create_bucket(Bucket="plain")
check("VersionId" not in s3.put_object(Bucket="plain", Key="p", Body=b"plain"),
      "PUT to an unversioned bucket returns no VersionId")
check(s3.head_object(Bucket="plain", Key="p").get("VersionId") in (None, "null"),
      "HEAD in an unversioned bucket: no VersionId, or null")
check(read("plain", "p", VersionId="null")[0] == b"plain", "GET ?versionId=null of an unversioned object")

# 3. Every PUT a new version.
first = put_id("ver", "k", b"one")
second = put_id("ver", "k", b"two")
third = put_id("ver", "k", b"three")
check(len({first, second, third}) == 3, f"three distinct version ids: {first} {second} {third}")
check(read("ver", "k") == (b"three", third), "GET without an id: the newest version and its id")
check(read("ver", "k", VersionId=first)[0] == b"one", "GET of the first version by id")
h = s3.head_object(Bucket="ver", Key="k", VersionId=second)
check(h["ContentLength"] == 3 and h.get("VersionId") == second, "HEAD of the second version by id")

# 4. ListObjectVersions: newest first, only the newest latest.
vs, dms = listing("ver", Prefix="k")
check([v["VersionId"] for v in vs] == [third, second, first], f"versions newest first: {vs}")
check(all(v["Key"] == "k" for v in vs), "every version is of k")
check([v["IsLatest"] for v in vs] == [True, False, False], "only the newest IsLatest")
check([v["Size"] for v in vs] == [5, 3, 3], "sizes per version")
check(dms == [], "no delete markers yet")

# 5. DELETE without an id: a delete marker hides the key.
r = s3.delete_object(Bucket="ver", Key="k")
marker = r.get("VersionId")
check(r.get("DeleteMarker") is True and marker and marker not in (first, second, third, "null"),
      f"DELETE adds a delete marker with its own id: {r}")
check(error_code(s3.get_object, Bucket="ver", Key="k") == ("NoSuchKey", 404), "GET behind a delete marker: NoSuchKey")
check(error_code(s3.head_object, Bucket="ver", Key="k") == ("404", 404), "HEAD behind a delete marker: 404")


def error_headers(fn, **kwargs):
    from botocore.exceptions import ClientError
    try:
        fn(**kwargs)
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPHeaders"]
    return {}


# The answers name the marker, as S3's do (x-amz-delete-marker, its id).
for fn in (s3.get_object, s3.head_object):
    h = error_headers(fn, Bucket="ver", Key="k")
    check(h.get("x-amz-delete-marker") == "true" and h.get("x-amz-version-id") == marker,
          f"{fn.__name__} behind a marker names it: {h}")
vs, dms = listing("ver", Prefix="k")
check([(d["Key"], d["VersionId"], d["IsLatest"]) for d in dms] == [("k", marker, True)],
      f"the delete marker is listed and latest: {dms}")
check([v["VersionId"] for v in vs] == [third, second, first] and not any(v["IsLatest"] for v in vs),
      "the three versions stay, none latest")
check("k" not in keys("ver"), "ListObjectsV2 hides a deleted key")
check(read("ver", "k", VersionId=first)[0] == b"one", "old versions still read by id")

# 6. A delete marker has no body.
check(error_code(s3.get_object, Bucket="ver", Key="k", VersionId=marker) == ("MethodNotAllowed", 405),
      "GET of a delete marker by id: MethodNotAllowed")
h = error_headers(s3.head_object, Bucket="ver", Key="k", VersionId=marker)
check(h.get("x-amz-delete-marker") == "true" and h.get("x-amz-version-id") == marker,
      f"HEAD of the marker by id names it: {h}")

# 7. Deleting the marker by id undeletes.
r = s3.delete_object(Bucket="ver", Key="k", VersionId=marker)
check(r.get("DeleteMarker") is True and r.get("VersionId") == marker, f"DELETE of the marker by id: {r}")
check(read("ver", "k")[0] == b"three", "the newest version is back")
check("k" in keys("ver"), "ListObjectsV2 shows the key again")

# 8. Deleting the current version by id: the previous one becomes current.
r = s3.delete_object(Bucket="ver", Key="k", VersionId=third)
check(r.get("VersionId") == third and not r.get("DeleteMarker"), f"DELETE of a version by id: {r}")
check(read("ver", "k") == (b"two", second), "the previous version is current")
vs, dms = listing("ver", Prefix="k")
check([(v["VersionId"], v["IsLatest"]) for v in vs] == [(second, True), (first, False)] and dms == [],
      f"two versions left, the second latest: {vs} {dms}")

# 9. Unknown and malformed version ids.
expect_error("NoSuchVersion", s3.get_object, Bucket="ver", Key="k", VersionId="0" * 32)
check(expect_error("InvalidArgument", s3.get_object, Bucket="ver", Key="k", VersionId="not-a-version") == 400,
      "a malformed version id is a 400")
check(error_code(s3.delete_object, Bucket="ver", Key="k", VersionId="0" * 32) == (None, 200),
      "DELETE of an absent version succeeds")
check(read("ver", "k")[0] == b"two", "deleting an absent version changed nothing")

# 10. Copy of a version.
r = s3.copy_object(Bucket="ver", Key="copy", CopySource={"Bucket": "ver", "Key": "k", "VersionId": first})
check(r.get("CopySourceVersionId") == first, f"CopySourceVersionId: {r.get('CopySourceVersionId')}")
check(r.get("VersionId") not in (None, "null"), "the copy gets a version id")
check(read("ver", "copy") == (b"one", r["VersionId"]), "the copy has the old version's bytes")

# 11. Tags belong to one version.
s3.put_object_tagging(Bucket="ver", Key="k", VersionId=first,
                      Tagging={"TagSet": [{"Key": "era", "Value": "first"}]})
t = s3.get_object_tagging(Bucket="ver", Key="k", VersionId=first)
check(t["TagSet"] == [{"Key": "era", "Value": "first"}] and t.get("VersionId") == first,
      f"tags of the first version: {t}")
check(s3.get_object_tagging(Bucket="ver", Key="k")["TagSet"] == [], "the current version has no tags")

# 12. DeleteObjects: by id removes the version, without adds a marker.
r = s3.delete_objects(Bucket="ver", Delete={"Objects": [{"Key": "k", "VersionId": first}, {"Key": "copy"}]})
done = {d["Key"]: d for d in r.get("Deleted", [])}
check(r.get("Errors", []) == [], f"DeleteObjects: no errors: {r.get('Errors')}")
check(done.get("k", {}).get("VersionId") == first, f"k's first version deleted: {done.get('k')}")
c = done.get("copy", {})
check(c.get("DeleteMarker") is True and c.get("DeleteMarkerVersionId") not in (None, "null"),
      f"copy got a delete marker: {c}")
check(read("ver", "k")[0] == b"two", "k's current version survives")
expect_error("NoSuchVersion", s3.get_object, Bucket="ver", Key="k", VersionId=first)

# 13. Suspended: one "null" version per key, overwritten in place.
s3.create_bucket(Bucket="sus")
s3.put_bucket_versioning(Bucket="sus", VersioningConfiguration={"Status": "Enabled"})
v1 = put_id("sus", "s", b"v1")
s3.put_bucket_versioning(Bucket="sus", VersioningConfiguration={"Status": "Suspended"})
check(s3.get_bucket_versioning(Bucket="sus").get("Status") == "Suspended", "Status Suspended reads back")
check(s3.put_object(Bucket="sus", Key="s", Body=b"n1").get("VersionId") == "null", "a suspended PUT is null")
check(s3.put_object(Bucket="sus", Key="s", Body=b"n2").get("VersionId") == "null", "and null again")
vs, dms = listing("sus", Prefix="s")
check([(v["VersionId"], v["IsLatest"], v["Size"]) for v in vs] == [("null", True, 2), (v1, False, 2)]
      and dms == [], f"the null version replaced in place, v1 kept: {vs} {dms}")
check(read("sus", "s", VersionId="null")[0] == b"n2", "the null version holds the last bytes")
check(read("sus", "s", VersionId=v1)[0] == b"v1", "the enabled-era version is kept")
r = s3.delete_object(Bucket="sus", Key="s")
check(r.get("DeleteMarker") is True and r.get("VersionId") == "null", f"a suspended DELETE: null marker: {r}")
vs, dms = listing("sus", Prefix="s")
check([(v["VersionId"], v["IsLatest"]) for v in vs] == [(v1, False)], f"the null version is gone: {vs}")
check([(d["VersionId"], d["IsLatest"]) for d in dms] == [("null", True)], f"a null delete marker: {dms}")

# 14. Pagination by KeyMarker and VersionIdMarker.
s3.create_bucket(Bucket="many")
s3.put_bucket_versioning(Bucket="many", VersioningConfiguration={"Status": "Enabled"})
ids = {k: [put_id("many", k, f"{k}{i}".encode()) for i in range(3)] for k in "abc"}
seen, markers = [], {}
for _ in range(10):
    r = s3.list_object_versions(Bucket="many", MaxKeys=2, **markers)
    page = r.get("Versions", [])
    check(len(page) <= 2, f"at most MaxKeys per page: {len(page)}")
    seen += [(v["Key"], v["VersionId"]) for v in page]
    if not r.get("IsTruncated"):
        break
    markers = {"KeyMarker": r["NextKeyMarker"], "VersionIdMarker": r["NextVersionIdMarker"]}
else:
    check(False, "ListObjectVersions still truncated after 10 pages of 2")
check(len(seen) == 9 and len(set(seen)) == 9, f"9 distinct versions over the pages: {seen}")
check(seen == [(k, vid) for k in "abc" for vid in reversed(ids[k])],
      f"keys ascending, each newest first: {seen}")

# 15. Delimiter.
put_id("many", "dir/x", b"x")
r = s3.list_object_versions(Bucket="many", Delimiter="/")
check(r.get("CommonPrefixes") == [{"Prefix": "dir/"}], f"CommonPrefixes: {r.get('CommonPrefixes')}")
check(not any(v["Key"].startswith("dir/") for v in r.get("Versions", [])), "no version under the prefix")
check(len(r.get("Versions", [])) == 9, "the nine top-level versions")

# 16. Versions and markers keep a bucket from being deleted.
expect_error("BucketNotEmpty", s3.delete_bucket, Bucket="sus")
r = s3.list_object_versions(Bucket="sus")
check(not r.get("IsTruncated"), "one page holds every version of sus")
for v in r.get("Versions", []) + r.get("DeleteMarkers", []):
    s3.delete_object(Bucket="sus", Key=v["Key"], VersionId=v["VersionId"])
vs, dms = listing("sus")
check(vs == [] and dms == [], f"every version and marker deleted: {vs} {dms}")
s3.delete_bucket(Bucket="sus")
check(error_code(s3.head_bucket, Bucket="sus")[1] == 404, "the emptied bucket is deleted")

# 17. A completed multipart upload is a new version.
data = b"m" * 1024
up = s3.create_multipart_upload(Bucket="ver", Key="mp")
part = s3.upload_part(Bucket="ver", Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=data)
r = s3.complete_multipart_upload(Bucket="ver", Key="mp", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
mp = r.get("VersionId")
check(mp not in (None, "null"), f"CompleteMultipartUpload returns a version id: {mp}")
check(read("ver", "mp", VersionId=mp) == (data, mp), "the multipart version reads back by id")

# 18. Restoring an old version: a copy of it onto its own key.
before = put_id("ver", "restore", b"before")
put_id("ver", "restore", b"after")
r = s3.copy_object(Bucket="ver", Key="restore",
                   CopySource={"Bucket": "ver", "Key": "restore", "VersionId": before})
check(read("ver", "restore") == (b"before", r["VersionId"]), "the old version is current again")
expect_error("InvalidRequest", s3.copy_object, Bucket="ver", Key="restore",
             CopySource={"Bucket": "ver", "Key": "restore"})

# 19. Keys with NUL are refused on every path.
expect_error("InvalidArgument", s3.delete_object, Bucket="ver", Key="a\x00b")
expect_error("InvalidArgument", s3.get_object, Bucket="ver", Key="a\x00b")

print("versioning: all checks passed", file=sys.stderr)
