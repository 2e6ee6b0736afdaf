"""A store worth copying (`shardgate meta copy`, issue 23), and its check.

    meta_copy.py fill STATE
        Writes bucket "plain" (40 objects of 0 to 300 KB, some with user
        metadata and tags, one of 12 MiB in three parts), bucket
        "versioned" (versions and a delete marker), and leaves a multipart
        upload of two parts open. Saves what it wrote to STATE (JSON).
    meta_copy.py check STATE [complete]
        Reads all of it back and compares: bodies, metadata, tags, the
        versions in order with their ids, the open upload and its parts.
        With `complete`, then completes the upload and reads it back.
Prints one JSON line; exits 1 on the first difference, naming it.
"""

import hashlib
import json
import random
import sys

from gateway_client import client

s3 = client()


def sha(body):
    return hashlib.sha256(body).hexdigest()


def fail(what):
    print(json.dumps({"ok": False, "difference": what}))
    sys.exit(1)


def fill(path):
    rng = random.Random(23)
    state = {"plain": {}, "versions": {}, "upload": None}
    s3.create_bucket(Bucket="plain")
    for i in range(40):
        key = f"dir{i % 4}/obj-{i:03d}"
        body = rng.randbytes(rng.choice([0, 1, 4096, 65_536, 300_000]))
        extra = {}
        if i % 5 == 0:
            extra["Metadata"] = {"n": str(i)}
            extra["Tagging"] = f"n={i}"
        s3.put_object(Bucket="plain", Key=key, Body=body, **extra)
        state["plain"][key] = {"sha": sha(body), "meta": extra.get("Metadata", {}),
                               "tags": {"n": str(i)} if i % 5 == 0 else {}}
    parts = [rng.randbytes(5 << 20), rng.randbytes(5 << 20), rng.randbytes(2 << 20)]
    up = s3.create_multipart_upload(Bucket="plain", Key="big")["UploadId"]
    done = []
    for n, part in enumerate(parts, 1):
        etag = s3.upload_part(Bucket="plain", Key="big", UploadId=up, PartNumber=n, Body=part)["ETag"]
        done.append({"PartNumber": n, "ETag": etag})
    s3.complete_multipart_upload(Bucket="plain", Key="big", UploadId=up,
                                 MultipartUpload={"Parts": done})
    state["plain"]["big"] = {"sha": sha(b"".join(parts)), "meta": {}, "tags": {}}

    s3.create_bucket(Bucket="versioned")
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    for key, count, marker in [("v", 3, True), ("w", 2, False)]:
        for n in range(count):
            s3.put_object(Bucket="versioned", Key=key, Body=f"{key}{n}".encode())
        if marker:
            s3.delete_object(Bucket="versioned", Key=key)
    state["versions"] = versions()

    open_parts = [rng.randbytes(5 << 20), rng.randbytes(1000)]
    up = s3.create_multipart_upload(Bucket="plain", Key="open")["UploadId"]
    etags = []
    for n, part in enumerate(open_parts, 1):
        etags.append(s3.upload_part(Bucket="plain", Key="open", UploadId=up, PartNumber=n,
                                    Body=part)["ETag"])
    state["upload"] = {"id": up, "etags": etags, "sha": sha(b"".join(open_parts))}
    with open(path, "w") as f:
        json.dump(state, f)
    print(json.dumps({"ok": True, "objects": len(state["plain"])}))


def versions():
    """Every version and delete marker of bucket "versioned", newest first
    per key, with its body's digest."""
    out = []
    page = s3.list_object_versions(Bucket="versioned")
    for v in page.get("Versions", []):
        body = s3.get_object(Bucket="versioned", Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
        out.append([v["Key"], v["VersionId"], v["IsLatest"], sha(body)])
    for m in page.get("DeleteMarkers", []):
        out.append([m["Key"], m["VersionId"], m["IsLatest"], "delete-marker"])
    return sorted(out)


def check(path, complete):
    with open(path) as f:
        state = json.load(f)
    listed = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="plain"):
        listed.update(o["Key"] for o in page.get("Contents", []))
    if listed != set(state["plain"]):
        fail(f"listing: {sorted(listed ^ set(state['plain']))}")
    for key, want in state["plain"].items():
        got = s3.get_object(Bucket="plain", Key=key)
        if sha(got["Body"].read()) != want["sha"]:
            fail(f"body of {key}")
        if got.get("Metadata", {}) != want["meta"]:
            fail(f"metadata of {key}: {got.get('Metadata')}")
        tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket="plain", Key=key)["TagSet"]}
        if tags != want["tags"]:
            fail(f"tags of {key}: {tags}")
    if versions() != state["versions"]:
        fail(f"versions: {versions()} != {state['versions']}")
    uploads = s3.list_multipart_uploads(Bucket="plain").get("Uploads", [])
    up = state["upload"]
    if [u["UploadId"] for u in uploads] != [up["id"]]:
        fail(f"open uploads: {uploads}")
    parts = s3.list_parts(Bucket="plain", Key="open", UploadId=up["id"]).get("Parts", [])
    if [p["ETag"] for p in parts] != up["etags"]:
        fail(f"parts: {parts}")
    if complete:
        s3.complete_multipart_upload(
            Bucket="plain", Key="open", UploadId=up["id"],
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                       for n, e in enumerate(up["etags"], 1)]})
        body = s3.get_object(Bucket="plain", Key="open")["Body"].read()
        if sha(body) != up["sha"]:
            fail("the completed upload's body")
    print(json.dumps({"ok": True, "objects": len(state["plain"]),
                      "versions": len(state["versions"]), "completed": complete}))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "fill":
        fill(args[0])
    elif mode == "check":
        check(args[0], args[1:] == ["complete"])
    else:
        sys.exit(f"unknown mode {mode}")
