"""Concurrent PUTs and GETs while a background job runs (a drain, a
repair): THREADS workers each write new keys and read back keys written
before, checking every byte, until STOP_FILE exists or SECONDS pass. One
attempt per request (gateway_client): any error counts.

    churn.py BUCKET THREADS SECONDS STOP_FILE
    churn.py BUCKET check KEYS_FILE     reads every listed key back

Prints `churn ok PUTS GETS` and exits 0 when nothing failed; else prints
the first failures and exits 3. The keys written are listed in
STOP_FILE.keys (one per line) for a later check."""

import os
import random
import sys
import threading
import time

from gateway_client import client

def content(key):
    rng = random.Random(key)
    return rng.randbytes(rng.choice([700, 50_000, 400_000]))


if sys.argv[2] == "check":
    s3 = client(pool=4)
    keys = [k for k in open(sys.argv[3]).read().split("\n") if k]
    for key in keys:
        body = s3.get_object(Bucket=sys.argv[1], Key=key)["Body"].read()
        if body != content(key):
            print("FAILED", key, len(body), "bytes differ")
            sys.exit(3)
    print("check ok", len(keys))
    sys.exit(0)

bucket, threads, seconds, stop_file = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
s3 = client(pool=threads + 2)
deadline = time.monotonic() + seconds
lock = threading.Lock()
written, failures = [], []
counts = {"put": 0, "get": 0}


def worker(n):
    i = 0
    while time.monotonic() < deadline and not os.path.exists(stop_file):
        key = f"churn-{n}-{i}"
        i += 1
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=content(key))
            with lock:
                written.append(key)
                counts["put"] += 1
                old = random.choice(written)
            body = s3.get_object(Bucket=bucket, Key=old)["Body"].read()
            if body != content(old):
                raise AssertionError(f"{old}: {len(body)} bytes differ")
            with lock:
                counts["get"] += 1
        except Exception as e:  # noqa: BLE001: every failure counts
            with lock:
                failures.append(f"{key}: {type(e).__name__}: {e}")


pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
with open(stop_file + ".keys", "w") as f:
    f.write("\n".join(written))
if failures:
    print("FAILED", len(failures), "of", counts, *failures[:5], sep="\n")
    sys.exit(3)
print("churn ok", counts["put"], counts["get"])
