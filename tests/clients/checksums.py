"""boto3 (with awscrt, which gives botocore CRC32C and CRC64NVME) against a
running shardgate: S3's additional checksums, every algorithm. A PUT's
checksum is verified (in a header over HTTP, in the aws-chunked trailer
over HTTPS: the script checks which it sent), stored and returned, and
botocore checks the bytes of a GET against it. Multipart uploads get a
COMPOSITE checksum (the checksum of the parts' checksums, "-N") or a
FULL_OBJECT one (the CRC of the whole object, combined from the parts'),
checked part by part on completion, with S3's error codes for each wrong
case. Copies carry a whole-object checksum and compute one where the
source's was composite. Run by tests/s3_clients.rs; exits non-zero on the
first failed check."""

import base64
import io
import os

import botocore.httpchecksum as httpchecksum
from boto3.s3.transfer import TransferConfig

from gateway_client import check, client, expect_error

check(httpchecksum.HAS_CRT, "awscrt is importable (tests/support puts it on PYTHONPATH)")
s3 = client()
over_https = os.environ["S3_ENDPOINT"].startswith("https:")
B = "sums"
ALGORITHMS = ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"]
MIB = 1024 * 1024


def local(algorithm, data):
    """The checksum botocore computes (its own code, or awscrt's)."""
    c = httpchecksum._CHECKSUM_CLS[algorithm.lower()]()
    c.update(data)
    return c.b64digest()


def raw(value):
    return base64.b64decode(value)


def body(seed, n):
    return bytes((i * seed + 11) % 251 for i in range(n))


# What botocore sent: the request headers of each PutObject and UploadPart.
sent = []
s3.meta.events.register("before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers)))
s3.meta.events.register("before-send.s3.UploadPart", lambda request, **_: sent.append(dict(request.headers)))

s3.create_bucket(Bucket=B)

# --- PUT and GET, every algorithm -------------------------------------------
data = body(3, 200_000)
for a in ALGORITHMS:
    key = f"one-{a}"
    sent.clear()
    r = s3.put_object(Bucket=B, Key=key, Body=data, ChecksumAlgorithm=a)
    headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in sent[-1].items()}
    trailer = headers.get("x-amz-trailer")
    if over_https:
        check(trailer == f"x-amz-checksum-{a.lower()}", f"{a}: sent in the aws-chunked trailer ({headers})")
    else:
        check(trailer is None and f"x-amz-checksum-{a.lower()}" in headers, f"{a}: sent in a header ({headers})")
    want = local(a, data)
    check(r.get(f"Checksum{a}") == want, f"{a}: PUT returns the verified value {r}")
    g = s3.get_object(Bucket=B, Key=key, ChecksumMode="ENABLED")
    check(g.get(f"Checksum{a}") == want and g.get("ChecksumType") == "FULL_OBJECT", f"{a}: GET returns it {g}")
    check(g["Body"].read() == data, f"{a}: the bytes read back")
    check(g["ResponseMetadata"].get("HTTPStatusCode") == 200, "GET 200")
    h = s3.head_object(Bucket=B, Key=key, ChecksumMode="ENABLED")
    check(h.get(f"Checksum{a}") == want, f"{a}: HEAD returns it")
    # A wrong value in the header: BadDigest, and nothing is written.
    wrong = local(a, data + b"!")
    expect_error("BadDigest", s3.put_object, Bucket=B, Key=f"bad-{a}", Body=data, **{f"Checksum{a}": wrong})
    expect_error("NoSuchKey", s3.get_object, Bucket=B, Key=f"bad-{a}")

# A wrong value in the trailer: BadDigest too. (botocore sends the right
# one; the hook changes it on the wire.)
if over_https:
    class WrongTrailer:
        def __init__(self, inner):
            self.inner = inner

        def read(self, *args):
            return self.inner.read(*args).replace(b"x-amz-checksum-crc32:", b"x-amz-checksum-crc32:AAAA")

        def __getattr__(self, name):
            return getattr(self.inner, name)

    def corrupt(request, **_):
        request.body = WrongTrailer(request.body)

    s3.meta.events.register("before-send.s3.PutObject", corrupt, unique_id="corrupt")
    expect_error("BadDigest", s3.put_object, Bucket=B, Key="bad-trailer", Body=data, ChecksumAlgorithm="CRC32")
    s3.meta.events.unregister("before-send.s3.PutObject", unique_id="corrupt")
    expect_error("NoSuchKey", s3.get_object, Bucket=B, Key="bad-trailer")

# Two checksums in one request: InvalidRequest.
expect_error("InvalidRequest", s3.put_object, Bucket=B, Key="two", Body=b"x",
             ChecksumCRC32=local("CRC32", b"x"), ChecksumSHA1=local("SHA1", b"x"))

# --- Multipart: COMPOSITE ----------------------------------------------------
parts_data = [body(5, 5 * MIB), body(7, 5 * MIB), body(9, 1000)]
whole = b"".join(parts_data)


def upload_parts(key, algorithm, sender=s3, **create):
    """Creates an upload and sends its parts; returns (upload id, parts)."""
    u = s3.create_multipart_upload(Bucket=B, Key=key, ChecksumAlgorithm=algorithm, **create)
    check(u.get("ChecksumAlgorithm") == algorithm, f"CreateMultipartUpload echoes the algorithm {u}")
    parts = []
    for n, p in enumerate(parts_data, 1):
        args = {"ChecksumAlgorithm": algorithm} if sender is s3 else {}
        r = sender.upload_part(Bucket=B, Key=key, UploadId=u["UploadId"], PartNumber=n, Body=p, **args)
        check(r.get(f"Checksum{algorithm}") == local(algorithm, p), f"part {n}: its {algorithm} {r}")
        parts.append({"PartNumber": n, "ETag": r["ETag"], f"Checksum{algorithm}": r[f"Checksum{algorithm}"]})
    return u["UploadId"], parts


for a in ["CRC32", "SHA256"]:
    key = f"composite-{a}"
    upload, parts = upload_parts(key, a)
    check(s3.list_multipart_uploads(Bucket=B)["Uploads"], "the upload is listed")
    lp = s3.list_parts(Bucket=B, Key=key, UploadId=upload)
    check(lp.get("ChecksumAlgorithm") == a and lp.get("ChecksumType") == "COMPOSITE", f"ListParts: {lp}")
    check([p.get(f"Checksum{a}") for p in lp["Parts"]] == [p[f"Checksum{a}"] for p in parts],
          "ListParts lists each part's checksum")
    # Wrong cases first (the upload stays open).
    no_sums = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
    expect_error("InvalidRequest", s3.complete_multipart_upload, Bucket=B, Key=key, UploadId=upload,
                 MultipartUpload={"Parts": no_sums})
    bad = [dict(p) for p in parts]
    bad[1][f"Checksum{a}"] = local(a, b"other")
    expect_error("InvalidPart", s3.complete_multipart_upload, Bucket=B, Key=key, UploadId=upload,
                 MultipartUpload={"Parts": bad})
    expect_error("InvalidRequest", s3.complete_multipart_upload, Bucket=B, Key=key, UploadId=upload,
                 MultipartUpload={"Parts": parts}, ChecksumType="FULL_OBJECT")
    expect_error("InvalidRequest", s3.complete_multipart_upload, Bucket=B, Key=key, UploadId=upload,
                 MultipartUpload={"Parts": parts}, MpuObjectSize=len(whole) + 1)
    # A part of another algorithm: refused.
    other = "CRC32C" if a != "CRC32C" else "CRC32"
    expect_error("InvalidRequest", s3.upload_part, Bucket=B, Key=key, UploadId=upload, PartNumber=4,
                 Body=b"tail", ChecksumAlgorithm=other)
    c = s3.complete_multipart_upload(Bucket=B, Key=key, UploadId=upload, MultipartUpload={"Parts": parts},
                                     MpuObjectSize=len(whole))
    composite = local(a, b"".join(raw(p[f"Checksum{a}"]) for p in parts)) + "-3"
    check(c.get(f"Checksum{a}") == composite and c.get("ChecksumType") == "COMPOSITE",
          f"{a}: the composite checksum {c} (want {composite})")
    g = s3.get_object(Bucket=B, Key=key, ChecksumMode="ENABLED")
    check(g.get(f"Checksum{a}") == composite and g.get("ChecksumType") == "COMPOSITE", f"GET: {g}")
    check(g["Body"].read() == whole, "the multipart object reads back")
    # One part: its own checksum, which botocore checks against the part's bytes.
    g2 = s3.get_object(Bucket=B, Key=key, PartNumber=2, ChecksumMode="ENABLED")
    check(g2.get(f"Checksum{a}") == local(a, parts_data[1]), f"GET part 2: its checksum {g2}")
    check(g2["Body"].read() == parts_data[1], "part 2 reads back")
    h = s3.head_object(Bucket=B, Key=key, PartNumber=3, ChecksumMode="ENABLED")
    check(h.get(f"Checksum{a}") == local(a, parts_data[2]), f"HEAD part 3: its checksum {h}")
    at = s3.get_object_attributes(Bucket=B, Key=key, ObjectAttributes=["Checksum", "ObjectParts"])
    check(at["Checksum"].get(f"Checksum{a}") == composite and at["Checksum"].get("ChecksumType") == "COMPOSITE",
          f"GetObjectAttributes: the checksum {at}")
    check([p.get(f"Checksum{a}") for p in at["ObjectParts"]["Parts"]] == [local(a, p) for p in parts_data],
          "GetObjectAttributes: each part's checksum")

# The whole-object value on completion is checked too: BadDigest.
upload, parts = upload_parts("composite-wrong", "CRC32C")
expect_error("BadDigest", s3.complete_multipart_upload, Bucket=B, Key="composite-wrong", UploadId=upload,
             MultipartUpload={"Parts": parts}, ChecksumCRC32C=local("CRC32C", b"nope") + "-3")
s3.abort_multipart_upload(Bucket=B, Key="composite-wrong", UploadId=upload)

# Parts sent without a checksum (botocore sends none only when told to):
# the gateway computes the upload's own.
bare = client(checksums="when_required")
sent.clear()
upload, parts = upload_parts("computed", "SHA1", sender=bare)
s3.complete_multipart_upload(Bucket=B, Key="computed", UploadId=upload, MultipartUpload={"Parts": parts})
h = s3.head_object(Bucket=B, Key="computed", ChecksumMode="ENABLED")
check(h.get("ChecksumSHA1", "").endswith("-3"), f"a composite SHA1 from parts sent without one {h}")

# --- Multipart: FULL_OBJECT ------------------------------------------------
for a in ["CRC32", "CRC32C", "CRC64NVME"]:
    key = f"full-{a}"
    upload, parts = upload_parts(key, a, ChecksumType="FULL_OBJECT")
    want = local(a, whole)
    expect_error("BadDigest", s3.complete_multipart_upload, Bucket=B, Key=key, UploadId=upload,
                 MultipartUpload={"Parts": parts}, **{f"Checksum{a}": local(a, whole + b"!")})
    c = s3.complete_multipart_upload(Bucket=B, Key=key, UploadId=upload, MultipartUpload={"Parts": parts},
                                     ChecksumType="FULL_OBJECT", **{f"Checksum{a}": want})
    check(c.get(f"Checksum{a}") == want and c.get("ChecksumType") == "FULL_OBJECT",
          f"{a}: the whole object's CRC, combined from the parts' {c} (want {want})")
    # botocore checks the whole body against it.
    g = s3.get_object(Bucket=B, Key=key, ChecksumMode="ENABLED")
    check(g.get(f"Checksum{a}") == want and g["Body"].read() == whole, f"GET {a} full object")

# CRC64NVME defaults to FULL_OBJECT; it cannot be COMPOSITE; SHA cannot be FULL_OBJECT.
u = s3.create_multipart_upload(Bucket=B, Key="nvme", ChecksumAlgorithm="CRC64NVME")
check(u.get("ChecksumType") == "FULL_OBJECT", f"CRC64NVME is full-object by default {u}")
s3.abort_multipart_upload(Bucket=B, Key="nvme", UploadId=u["UploadId"])
expect_error("InvalidRequest", s3.create_multipart_upload, Bucket=B, Key="x", ChecksumAlgorithm="CRC64NVME",
             ChecksumType="COMPOSITE")
expect_error("InvalidRequest", s3.create_multipart_upload, Bucket=B, Key="x", ChecksumAlgorithm="SHA256",
             ChecksumType="FULL_OBJECT")

# s3transfer with a whole-object CRC32 of its own: FULL_OBJECT upload.
small = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
s3.upload_fileobj(io.BytesIO(whole), B, "transfer", ExtraArgs={"ChecksumCRC32": local("CRC32", whole)},
                  Config=small)
h = s3.head_object(Bucket=B, Key="transfer", ChecksumMode="ENABLED")
check(h.get("ChecksumCRC32") == local("CRC32", whole) and h.get("ChecksumType") == "FULL_OBJECT",
      f"upload_fileobj with ChecksumCRC32: a full-object checksum {h}")
# ... and its default (CRC32 on each part, composite).
s3.upload_fileobj(io.BytesIO(whole), B, "transfer-default", Config=small)
h = s3.head_object(Bucket=B, Key="transfer-default", ChecksumMode="ENABLED")
check(h.get("ChecksumCRC32", "").endswith("-3"), f"upload_fileobj's default: composite CRC32 {h}")

# --- Copies ----------------------------------------------------------------
s3.copy_object(Bucket=B, Key="copy-one", CopySource={"Bucket": B, "Key": "one-SHA1"})
h = s3.head_object(Bucket=B, Key="copy-one", ChecksumMode="ENABLED")
check(h.get("ChecksumSHA1") == local("SHA1", data), f"a copy carries a whole-object checksum {h}")
r = s3.copy_object(Bucket=B, Key="copy-composite", CopySource={"Bucket": B, "Key": "composite-CRC32"})
check(r["CopyObjectResult"].get("ChecksumCRC32") == local("CRC32", whole),
      f"a copy of a composite object gets the whole object's {r}")
r = s3.copy_object(Bucket=B, Key="copy-asked", CopySource={"Bucket": B, "Key": "one-CRC32"},
                   ChecksumAlgorithm="CRC64NVME")
h = s3.head_object(Bucket=B, Key="copy-asked", ChecksumMode="ENABLED")
check(h.get("ChecksumCRC64NVME") == local("CRC64NVME", data) and "ChecksumCRC32" not in h,
      f"x-amz-checksum-algorithm on a copy computes that one {h}")

# UploadPartCopy into an upload with a checksum: the part gets its checksum.
u = s3.create_multipart_upload(Bucket=B, Key="part-copy", ChecksumAlgorithm="CRC32C")
r = s3.upload_part_copy(Bucket=B, Key="part-copy", UploadId=u["UploadId"], PartNumber=1,
                        CopySource={"Bucket": B, "Key": "one-CRC32"})
check(r["CopyPartResult"].get("ChecksumCRC32C") == local("CRC32C", data), f"UploadPartCopy: {r}")
c = s3.complete_multipart_upload(
    Bucket=B, Key="part-copy", UploadId=u["UploadId"],
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"],
                                "ChecksumCRC32C": r["CopyPartResult"]["ChecksumCRC32C"]}]})
check(c.get("ChecksumCRC32C") == local("CRC32C", raw(local("CRC32C", data))) + "-1", f"one-part composite {c}")

print("checksums: all checks passed")
