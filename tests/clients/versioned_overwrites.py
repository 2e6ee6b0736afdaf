"""Versioned overwrites of one key while the gateway may be killed.

    versioned_overwrites.py write BUCKET KEY THREADS ACK_FILE
        THREADS workers PUT new versions of KEY (at most 400 each, bodies
        named by a token: a third of at most 4 KiB, which the embedded
        default keeps in the manifest, the rest of 1 to 300 KB); after each acknowledged PUT its
        `VERSION_ID TOKEN` line is appended to ACK_FILE and flushed. A
        worker stops at its first failed request (the gateway was killed).
    versioned_overwrites.py check BUCKET KEY ACK_FILE
        Lists every version of KEY (paged) and reads each acknowledged one
        back by id: all must be listed, each with its own bytes; every other
        version listed must read whole too.

Prints `ok N` and exits 0, or names the first failure and exits 3."""

import random
import sys
import threading

from gateway_client import client


def content(token):
    rng = random.Random(token)
    if rng.random() < 1 / 3:
        return rng.randbytes(rng.randint(0, 4096))
    return rng.randbytes(rng.randint(1_000, 300_000))


def write(bucket, key, threads, ack_path):
    lock = threading.Lock()
    ack = open(ack_path, "a")
    count = [0]

    def worker(t):
        s3 = client(pool=2)
        for n in range(400):
            token = f"{t}-{n}-{random.random()}"
            try:
                r = s3.put_object(Bucket=bucket, Key=key, Body=content(token))
            except Exception:
                return
            with lock:
                ack.write(f"{r['VersionId']} {token}\n")
                ack.flush()
                count[0] += 1

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print("ok", count[0])


def check(bucket, key, ack_path):
    s3 = client(pool=4)
    acked = [line.split() for line in open(ack_path).read().splitlines() if line]
    listed, kw = set(), {}
    for _ in range(1000):
        page = s3.list_object_versions(Bucket=bucket, Prefix=key, MaxKeys=1000, **kw)
        listed.update(v["VersionId"] for v in page.get("Versions", []) if v["Key"] == key)
        if not page.get("IsTruncated"):
            break
        kw = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
    for version, token in acked:
        if version not in listed:
            print("FAILED: acknowledged version", version, "is not listed", file=sys.stderr)
            sys.exit(3)
        body = s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
        if body != content(token):
            print("FAILED: version", version, "does not read back its bytes", file=sys.stderr)
            sys.exit(3)
    # Committed just before a kill, its answer lost: whole all the same.
    for version in listed - {v for v, _ in acked}:
        s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
    print("ok", len(acked))


if sys.argv[1] == "write":
    write(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
else:
    check(sys.argv[2], sys.argv[3], sys.argv[4])
