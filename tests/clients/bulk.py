"""Many objects at once with boto3, for the garbage and commit tests.

    bulk.py put BUCKET COUNT SIZE ROUND     keys k0000.. with round ROUND's bytes
    bulk.py check BUCKET COUNT SIZE ROUND   reads every key back and compares

The bytes of a key depend on its name and the round, so a check knows
what each key must hold after an overwrite. Prints one line and exits 0;
on the first failure prints it and exits 3."""

import random
import sys
from concurrent.futures import ThreadPoolExecutor

from gateway_client import client

s3 = client(pool=8)


def content(key, size, rnd):
    return random.Random(f"{key}:{rnd}").randbytes(size)


def main():
    op, bucket, count, size, rnd = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    keys = [f"k{i:04d}" for i in range(count)]

    def put(key):
        s3.put_object(Bucket=bucket, Key=key, Body=content(key, size, rnd))

    def check(key):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if body != content(key, size, rnd):
            raise AssertionError(f"{key}: {len(body)} bytes differ from round {rnd}")

    work = {"put": put, "check": check}[op]
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, keys))
    except Exception as e:
        print("FAILED", type(e).__name__, e)
        sys.exit(3)
    print(f"{op} {count} ok")


main()
