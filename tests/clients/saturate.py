"""Many concurrent PUTs through one boto3 client, more than the gateway
admits at once: the excess get 503 SlowDown and botocore's own retries
(standard mode) finish every upload; then every object is read back and
checked. Run by tests/hostile_clients.rs and scripts/saturate.sh with
S3_ENDPOINT and AWS_* set.

    saturate.py COUNT SIZE_BYTES [MAX_ATTEMPTS [existing]]

("existing": the bucket is there already, so the first request is a PUT.)

Each object's bytes are made on the fly from a shared random block and its
index, so COUNT objects in flight do not cost COUNT copies here. Prints one
line; the SlowDowns are counted by the gateway's /metrics."""

import hashlib
import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.client import Config

count, size = int(sys.argv[1]), int(sys.argv[2])
attempts = int(sys.argv[3]) if len(sys.argv) > 3 else 20
bucket_exists = len(sys.argv) > 4 and sys.argv[4] == "existing"
BLOCK = os.urandom(1 << 20)


class Body(io.RawIOBase):
    """Object `index`: the shared block repeated, its first 8 bytes the
    index, seekable (botocore rewinds it to checksum and to retry)."""

    def __init__(self, index):
        self.index, self.pos = index, 0
        self.head = index.to_bytes(8, "big")

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=0):
        base = {0: 0, 1: self.pos, 2: size}[whence]
        self.pos = max(0, min(size, base + offset))
        return self.pos

    def readinto(self, buf):
        n = min(len(buf), size - self.pos)
        out, pos, filled = memoryview(buf), self.pos, 0
        while filled < n:
            if pos < 8:
                piece = self.head[pos:8][: n - filled]
            else:
                start = pos % len(BLOCK)
                piece = BLOCK[start : start + (n - filled)]
            out[filled : filled + len(piece)] = piece
            filled += len(piece)
            pos += len(piece)
        self.pos = pos
        return n


def digest(index):
    h, b = hashlib.md5(), Body(index)
    while chunk := b.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


# One client per 100 uploads in flight, as 100-thread application
# instances would have: botocore's standard retry mode keeps a retry quota
# per client (about 100 retries), which one client driving 1,000 uploads
# would exhaust against any throttling server.
PER_CLIENT = 100


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            max_pool_connections=PER_CLIENT,
            retries={"mode": "standard", "max_attempts": attempts},
            connect_timeout=30,
            read_timeout=300,
        ),
    )


clients = [client() for _ in range(max(1, (count + PER_CLIENT - 1) // PER_CLIENT))]
s3 = clients[0]
bucket = "saturate"
if not bucket_exists:
    s3.create_bucket(Bucket=bucket)
start = time.time()


def put(i):
    clients[i % len(clients)].put_object(Bucket=bucket, Key=f"o{i}", Body=Body(i), ContentLength=size)


with ThreadPoolExecutor(max_workers=count) as pool:
    list(pool.map(put, range(count)))
took = time.time() - start


def check(i):
    got = hashlib.md5(s3.get_object(Bucket=bucket, Key=f"o{i}")["Body"].read()).hexdigest()
    if got != digest(i):
        raise SystemExit(f"object o{i} reads back wrong")


with ThreadPoolExecutor(max_workers=8) as pool:
    list(pool.map(check, range(count)))
print(f"uploads {count} of {size} bytes in {took:.1f} s, all read back")
