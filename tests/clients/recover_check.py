"""Issue 17's recovery check, in two halves around a lost metadata store.

    recover_check.py write STATE   writes 500 objects (some multipart, some
                                   overwritten, some deleted, in a plain and
                                   a versioned bucket) and saves what must
                                   survive in STATE (JSON)
    recover_check.py verify STATE  checks that every live object lists and
                                   reads back byte for byte, every version
                                   and delete marker is as it was, and
                                   deleted objects stay deleted

Every body starts with MARKER and its key, and carries user metadata
MARKER-META, so a scan of the backends can look for plaintext.
"""

import hashlib
import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor

from gateway_client import check, client, expect_error

MARKER = b"PLAINTEXT-MARKER-7f3a"
PLAIN = "recovery-plain"
VERSIONED = "recovery-versioned"
PART = 5 << 20


def body(key, round_, size):
    head = MARKER + b":" + key.encode() + b":" + str(round_).encode() + b":"
    rng = random.Random(f"{key}/{round_}")
    return head + rng.randbytes(max(0, size - len(head)))


def digest(data):
    return hashlib.sha256(data).hexdigest()


def put(s3, bucket, key, data):
    return s3.put_object(
        Bucket=bucket, Key=key, Body=data, Metadata={"owner": "MARKER-META"}
    )


def multipart(s3, bucket, key, data):
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"owner": "MARKER-META"})
    parts = []
    for n, at in enumerate(range(0, len(data), PART), start=1):
        r = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=data[at : at + PART]
        )
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )


def versions_of(s3):
    """Every version and delete marker of the versioned bucket, each
    version read whole: [key, version id, latest, ETag or "marker", sha256]."""
    versions = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=VERSIONED):
        for v in page.get("Versions", []):
            data = s3.get_object(Bucket=VERSIONED, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
            versions.append([v["Key"], v["VersionId"], v["IsLatest"], v["ETag"], digest(data)])
        for d in page.get("DeleteMarkers", []):
            versions.append([d["Key"], d["VersionId"], d["IsLatest"], "marker", ""])
    return versions


def write(path):
    s3 = client(pool=16)
    s3.create_bucket(Bucket=PLAIN)
    s3.create_bucket(Bucket=VERSIONED)
    s3.put_bucket_versioning(Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"})
    rng = random.Random(17)
    live = {}
    deleted = []

    # 402 small and medium objects, 4 multipart ones: the plain bucket.
    plain_keys = [f"docs/file-{i:04}" for i in range(402)]
    sizes = {k: rng.choice([0, 100, 4096, 20_000, 70_000, 300_000]) for k in plain_keys}

    def first(key):
        data = body(key, 0, sizes[key])
        put(s3, PLAIN, key, data)
        return key, data

    with ThreadPoolExecutor(8) as pool:
        for key, data in pool.map(first, plain_keys):
            live[key] = digest(data)
    for i in range(4):
        key = f"big/multipart-{i}"
        data = body(key, 0, PART + 1000 * (i + 1))
        multipart(s3, PLAIN, key, data)
        live[key] = digest(data)
    # 50 overwritten (one of them by a multipart upload), 60 deleted.
    for key in plain_keys[:50]:
        data = body(key, 1, sizes[key] + 7)
        put(s3, PLAIN, key, data)
        live[key] = digest(data)
    data = body("big/multipart-0", 1, PART + 3)
    multipart(s3, PLAIN, "big/multipart-0", data)
    live["big/multipart-0"] = digest(data)
    for key in plain_keys[100:160]:
        s3.delete_object(Bucket=PLAIN, Key=key)
        del live[key]
        deleted.append(key)

    # 94 objects in the versioned bucket: 30 with a second version, 20
    # under a delete marker.
    vkeys = [f"ver/obj-{i:03}" for i in range(94)]
    for key in vkeys:
        put(s3, VERSIONED, key, body(key, 0, 1000))
    for key in vkeys[:30]:
        put(s3, VERSIONED, key, body(key, 1, 2000))
    for key in vkeys[30:50]:
        s3.delete_object(Bucket=VERSIONED, Key=key)

    # An upload left in progress: not journaled (its parts become orphans).
    s3.create_multipart_upload(Bucket=PLAIN, Key="unfinished")

    versions = versions_of(s3)
    check(len(versions) == 94 + 30 + 20, f"{len(versions)} versions")
    with open(path, "w") as f:
        json.dump({"live": live, "deleted": deleted, "versions": sorted(versions)}, f)
    print(f"wrote {len(plain_keys) + 4 + len(vkeys)} objects")


def verify(path):
    with open(path) as f:
        state = json.load(f)
    s3 = client(pool=16)
    names = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    check(names == [PLAIN, VERSIONED], f"buckets {names}")
    listed = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=PLAIN):
        listed += [o["Key"] for o in page.get("Contents", [])]
    check(sorted(listed) == sorted(state["live"]), f"{len(listed)} keys listed, {len(state['live'])} live")

    def read(item):
        key, want = item
        r = s3.get_object(Bucket=PLAIN, Key=key)
        data = r["Body"].read()
        ok = digest(data) == want and r["Metadata"].get("owner") == "MARKER-META"
        return key, ok

    with ThreadPoolExecutor(8) as pool:
        bad = [k for k, ok in pool.map(read, state["live"].items()) if not ok]
    check(not bad, f"objects read back wrong: {bad[:5]}")
    for key in state["deleted"]:
        expect_error("NoSuchKey", s3.get_object, Bucket=PLAIN, Key=key)
    uploads = s3.list_multipart_uploads(Bucket=PLAIN).get("Uploads", [])
    check(uploads == [], f"uploads in progress came back: {uploads}")

    versions = versions_of(s3)
    check(sorted(versions) == state["versions"], "the versioned bucket's versions differ")
    for key, _, latest, kind, _ in state["versions"]:
        if kind == "marker" and latest:
            expect_error("NoSuchKey", s3.get_object, Bucket=VERSIONED, Key=key)
    # Writable again, with versions that sort after the recovered ones.
    s3.put_object(Bucket=VERSIONED, Key="ver/obj-000", Body=b"after")
    latest = s3.list_object_versions(Bucket=VERSIONED, Prefix="ver/obj-000")["Versions"]
    newest = [v for v in latest if v["IsLatest"]]
    check(len(newest) == 1 and newest[0]["Size"] == 5, f"a new version is the latest: {latest}")
    s3.delete_object(Bucket=VERSIONED, Key="ver/obj-000", VersionId=newest[0]["VersionId"])
    print(f"verified {len(state['live'])} live objects and {len(state['versions'])} versions")


if __name__ == "__main__":
    {"write": write, "verify": verify}[sys.argv[1]](sys.argv[2])
