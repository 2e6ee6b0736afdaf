"""Protocol details a strict client checks (issue 19), each with boto3
(or curl) as it sends it, one section per detail: ListBuckets pages,
listings' encoding-type=url and empty delimiter, presigned URLs' expiry
bounds, a completion retried, a part sent twice at once, GET/HEAD
partNumber, ?torrent, PUTs of unknown length, aws-chunked content
encoding, RFC 2047 metadata. tests/s3_clients.rs runs each section as a
test of its own:

  protocol.py [SECTION...]

Exits non-zero on the first failed check."""

import email.header
import http.client
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from gateway_client import check, client, expect_error

s3 = client()
B = "page-a"
KEYS = ["a b/one", "a b/two+plus", "a b/é", "c/d"]


def fetch(url, method="GET", data=None):
    """A request to a URL as curl would send it: (status, body)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def setup():
    for name in ["page-a", "page-b", "page-c", "other-x"]:
        s3.create_bucket(Bucket=name)
    for k in KEYS:
        s3.put_object(Bucket=B, Key=k, Body=b"x")


def multipart_object():
    """"mp": two parts (5 MiB and "tail") with CRC32s; the parts' list."""
    up = s3.create_multipart_upload(Bucket=B, Key="mp", ChecksumAlgorithm="CRC32")["UploadId"]
    first_part = s3.upload_part(Bucket=B, Key="mp", UploadId=up, PartNumber=1, Body=b"a" * (5 << 20),
                                ChecksumAlgorithm="CRC32")
    last_part = s3.upload_part(Bucket=B, Key="mp", UploadId=up, PartNumber=2, Body=b"tail",
                               ChecksumAlgorithm="CRC32")
    parts = {"Parts": [{"PartNumber": 1, "ETag": first_part["ETag"], "ChecksumCRC32": first_part["ChecksumCRC32"]},
                       {"PartNumber": 2, "ETag": last_part["ETag"], "ChecksumCRC32": last_part["ChecksumCRC32"]}]}
    return up, parts


def list_buckets():
    # ListBuckets: MaxBuckets, ContinuationToken and Prefix.
    first = s3.list_buckets(MaxBuckets=2, Prefix="page-")
    check([b["Name"] for b in first["Buckets"]] == ["page-a", "page-b"], f"first page: {first['Buckets']}")
    check(first.get("Prefix") == "page-", f"the prefix is echoed: {first.get('Prefix')}")
    token = first.get("ContinuationToken")
    check(token, "a truncated page has a continuation token")
    second = s3.list_buckets(MaxBuckets=2, Prefix="page-", ContinuationToken=token)
    check([b["Name"] for b in second["Buckets"]] == ["page-c"], f"second page: {second['Buckets']}")
    check("ContinuationToken" not in second, "the last page has no token")
    every = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    check({"page-a", "page-b", "page-c", "other-x"} <= set(every), f"without MaxBuckets, all: {every}")
    expect_error("InvalidArgument", s3.list_buckets, MaxBuckets=10001)
    expect_error("InvalidArgument", s3.list_buckets, ContinuationToken="!!not-a-token")


def listing_encoding():
    # Listings: encoding-type=url encodes what it names, exactly once, and
    # only when asked; an empty delimiter is left out of the answer.
    plain = s3.list_objects_v2(Bucket=B)
    check(sorted(o["Key"] for o in plain["Contents"]) == sorted(KEYS), "boto3's own decoding gives the keys back")
    raw = s3.list_objects_v2(Bucket=B, EncodingType="url", Prefix="a b/", Delimiter="/")
    check(raw.get("Prefix") == "a%20b%2F", f"the prefix, encoded once: {raw.get('Prefix')}")
    check(raw.get("Delimiter") == "%2F", f"the delimiter, encoded: {raw.get('Delimiter')}")
    got = sorted(o["Key"] for o in raw["Contents"])
    check(got == sorted(["a%20b%2Fone", "a%20b%2Ftwo%2Bplus", "a%20b%2F%C3%A9"]), f"the keys, encoded once: {got}")
    empty = s3.list_objects_v2(Bucket=B, Delimiter="")
    check("Delimiter" not in empty, f"an empty delimiter is left out: {empty.get('Delimiter')!r}")
    check(len(empty["Contents"]) == len(KEYS), "an empty delimiter groups nothing")
    empty_v1 = s3.list_objects(Bucket=B, Delimiter="")
    check("Delimiter" not in empty_v1, "ListObjects leaves it out too")
    up = s3.create_multipart_upload(Bucket=B, Key="a b/up load")["UploadId"]
    uploads = s3.list_multipart_uploads(Bucket=B, EncodingType="url", Prefix="a b/", MaxUploads=1)
    check(uploads.get("Prefix") == "a%20b%2F", f"uploads' prefix, encoded: {uploads.get('Prefix')}")
    check([u["Key"] for u in uploads["Uploads"]] == ["a%20b%2Fup%20load"], f"uploads' keys: {uploads['Uploads']}")
    s3.abort_multipart_upload(Bucket=B, Key="a b/up load", UploadId=up)


def presigned_expiry():
    # Presigned URLs: X-Amz-Expires must be 1 to 604800, checked before the
    # signature or the object; an expired URL is AccessDenied whether or not
    # its object exists.
    ok = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "c/d"}, ExpiresIn=604800)
    status, body = fetch(ok)
    check(status == 200 and body == b"x", f"a week is allowed: {status}")
    too_long = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "c/d"}, ExpiresIn=604801)
    status, body = fetch(too_long)
    check(status == 400 and b"AuthorizationQueryParametersError" in body, f"over a week: {status} {body[:200]}")
    for expires in ["0", "-5", "soon"]:
        url = ok.replace("X-Amz-Expires=604800", f"X-Amz-Expires={expires}")
        status, body = fetch(url)
        check(status == 400 and b"AuthorizationQueryParametersError" in body,
              f"X-Amz-Expires={expires}: {status} {body[:200]}")
    # A PUT's bound is checked before its body is taken; the object stays
    # as it was.
    put_too_long = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "c/d"}, ExpiresIn=604801)
    status, body = fetch(put_too_long, "PUT", b"y")
    check(status == 400 and b"AuthorizationQueryParametersError" in body, f"a PUT over a week: {status} {body[:200]}")
    # ... and so is one of unknown length, as `curl -T -` sends a pipe.
    piped = subprocess.run(["curl", "-sS", "-w", "%{http_code}", "-T", "-", put_too_long],
                           input=b"y" * 100_000, capture_output=True, timeout=60)
    check(piped.stdout.endswith(b"400") and b"AuthorizationQueryParametersError" in piped.stdout,
          f"a piped PUT over a week: {piped.stdout[:300]} {piped.stderr}")
    check(s3.get_object(Bucket=B, Key="c/d")["Body"].read() == b"x", "a refused PUT changed the object")
    short = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "no-such-key"}, ExpiresIn=1)
    time.sleep(2.5)
    status, body = fetch(short)
    check(status == 403 and b"expired" in body, f"expired before the lookup: {status} {body[:200]}")


def completion_retried():
    # CompleteMultipartUpload sent again after it succeeded (an SDK retrying
    # a lost answer) gets the same answer; other parts find no upload.
    up, parts = multipart_object()
    done = s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=up, MultipartUpload=parts)
    again = s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=up, MultipartUpload=parts)
    for field in ["ETag", "ChecksumCRC32", "ChecksumType", "Key", "Bucket"]:
        check(again.get(field) == done.get(field), f"a retried completion's {field}: {again.get(field)} vs {done.get(field)}")
    expect_error("NoSuchUpload", s3.complete_multipart_upload, Bucket=B, Key="mp", UploadId=up,
                 MultipartUpload={"Parts": parts["Parts"][:1]})
    check(s3.head_object(Bucket=B, Key="mp")["ContentLength"] == (5 << 20) + 4, "the object is the first completion's")


def part_sent_twice():
    # A part sent twice at once: the upload that finished last is the part,
    # whichever began first.
    up = s3.create_multipart_upload(Bucket=B, Key="twice")["UploadId"]
    url = s3.generate_presigned_url("upload_part", ExpiresIn=300,
                                    Params={"Bucket": B, "Key": "twice", "UploadId": up, "PartNumber": 1})
    where = urllib.parse.urlsplit(url)
    slow_body = b"s" * 100_000
    slow = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    slow.putrequest("PUT", f"{where.path}?{where.query}")
    slow.putheader("Content-Length", str(len(slow_body)))
    slow.endheaders()
    slow.send(slow_body[:50_000])
    fast_etag = s3.upload_part(Bucket=B, Key="twice", UploadId=up, PartNumber=1, Body=b"fast")["ETag"]
    slow.send(slow_body[50_000:])
    answer = slow.getresponse()
    slow_etag = answer.getheader("ETag")
    check(answer.status == 200 and slow_etag and slow_etag != fast_etag, f"the slow part: {answer.status}")
    listed = s3.list_parts(Bucket=B, Key="twice", UploadId=up)["Parts"]
    check([p["ETag"] for p in listed] == [slow_etag], f"the part that finished last is kept: {listed}")
    expect_error("InvalidPart", s3.complete_multipart_upload, Bucket=B, Key="twice", UploadId=up,
                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": fast_etag}]})
    s3.complete_multipart_upload(Bucket=B, Key="twice", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": slow_etag}]})
    check(s3.get_object(Bucket=B, Key="twice")["Body"].read() == slow_body, "the object is the last finished part")
    s3.delete_object(Bucket=B, Key="twice")


def part_number():
    # GET and HEAD partNumber: a multipart object's parts as uploaded, with
    # their count; an object sent in one piece is one part; past the last part
    # is InvalidPartNumber (416), outside 1..10000 InvalidArgument.
    up, parts = multipart_object()
    s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=up, MultipartUpload=parts)
    got = s3.get_object(Bucket=B, Key="mp", PartNumber=2)
    check(got["Body"].read() == b"tail" and got["PartsCount"] == 2, f"GET partNumber=2: {got.get('PartsCount')}")
    head = s3.head_object(Bucket=B, Key="mp", PartNumber=1)
    check(head["ContentLength"] == 5 << 20 and head["PartsCount"] == 2, "HEAD partNumber=1")
    expect_error("InvalidPartNumber", s3.get_object, Bucket=B, Key="mp", PartNumber=3)
    expect_error("416", s3.head_object, Bucket=B, Key="mp", PartNumber=3)
    expect_error("InvalidArgument", s3.get_object, Bucket=B, Key="mp", PartNumber=0)
    expect_error("InvalidArgument", s3.get_object, Bucket=B, Key="mp", PartNumber=10001)
    whole = s3.get_object(Bucket=B, Key="c/d")["Body"].read()
    got = s3.get_object(Bucket=B, Key="c/d", PartNumber=1)
    check(got["Body"].read() == whole and "PartsCount" not in got, "one piece: part 1 is all of it")
    expect_error("InvalidPartNumber", s3.get_object, Bucket=B, Key="c/d", PartNumber=2)
    s3.delete_object(Bucket=B, Key="mp")


def torrent():
    # ?torrent: NoSuchKey for a key that is not there, NotImplemented for one
    # that is (S3 serves no torrent for encrypted objects).
    expect_error("NoSuchKey", s3.get_object_torrent, Bucket=B, Key="no-such-key")
    expect_error("NoSuchBucket", s3.get_object_torrent, Bucket="no-such-bucket", Key="c/d")
    expect_error("NotImplemented", s3.get_object_torrent, Bucket=B, Key="c/d")


def unknown_length():
    # A PUT of unknown length (Transfer-Encoding: chunked, no Content-Length),
    # as the Ceph s3-tests send it: taken, whole.
    chunked = client()
    chunked.meta.events.register_first(
        "before-sign.s3.PutObject", lambda request, **kw: request.headers.add_header("Transfer-Encoding", "chunked"))
    sent = []
    chunked.meta.events.register("before-send.s3.PutObject", lambda request, **kw: sent.append(dict(request.headers)))
    chunked.put_object(Bucket=B, Key="chunked", Body=b"bar" * 1000)
    check(sent and "Content-Length" not in sent[0] and sent[0].get("Transfer-Encoding") == b"chunked",
          f"the PUT went without a length: {sent}")
    check(s3.get_object(Bucket=B, Key="chunked")["Body"].read() == b"bar" * 1000, "a chunked PUT is stored whole")
    # ... and as `curl -T -` sends a pipe to a presigned URL.
    url = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "piped"}, ExpiresIn=300)
    piped = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", "-", url],
                           input=b"from a pipe", capture_output=True, timeout=60)
    check(piped.stdout == b"200", f"curl -T - to a presigned URL: {piped.stdout} {piped.stderr}")
    check(s3.get_object(Bucket=B, Key="piped")["Body"].read() == b"from a pipe", "the piped body")


def aws_chunked():
    # Content-Encoding: aws-chunked describes the request, not the object.
    s3.put_object(Bucket=B, Key="enc", Body=b"x", ContentEncoding="aws-chunked")
    check("ContentEncoding" not in s3.head_object(Bucket=B, Key="enc"), "aws-chunked alone is not kept")
    s3.put_object(Bucket=B, Key="enc", Body=b"x", ContentEncoding="aws-chunked,gzip")
    check(s3.head_object(Bucket=B, Key="enc")["ContentEncoding"] == "gzip", "aws-chunked is taken out")


def rfc2047():
    # User metadata sent RFC 2047-encoded is kept decoded, and anything not
    # US-ASCII is answered encoded (UTF-8, base64), as S3 does.
    s3.put_object(Bucket=B, Key="meta", Body=b"", Metadata={"name": "=?UTF-8?Q?=C3=A9l=C3=A8ne?=", "plain": "a=?b"})
    got = s3.head_object(Bucket=B, Key="meta")["Metadata"]
    check(got["name"] == "=?UTF-8?B?w6lsw6huZQ==?=", f"RFC 2047 metadata: {got}")
    decoded = str(email.header.make_header(email.header.decode_header(got["name"])))
    check(decoded == "\u00e9l\u00e8ne" and got["plain"] == "a=?b", f"decoded: {decoded!r}, {got}")


SECTIONS = [list_buckets, listing_encoding, presigned_expiry, completion_retried, part_sent_twice,
            part_number, torrent, unknown_length, aws_chunked, rfc2047]

if __name__ == "__main__":
    wanted = sys.argv[1:] or [f.__name__ for f in SECTIONS]
    check(set(wanted) <= {f.__name__ for f in SECTIONS}, f"unknown sections in {wanted}")
    setup()
    for section in SECTIONS:
        if section.__name__ in wanted:
            section()
            print(f"protocol {section.__name__}: all checks passed")
