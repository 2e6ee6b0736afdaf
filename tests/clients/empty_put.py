"""An empty PUT, then more requests on the same boto3 client (its pooled
connection), each answered well within a 5 s read timeout.

    empty_put.py BUCKET"""

import sys
import time

from gateway_client import check, client

bucket = sys.argv[1]
s3 = client(checksums="when_required", read_timeout=5)
for size in [0, 100, 0, 5000, 0]:
    began = time.monotonic()
    s3.put_object(Bucket=bucket, Key=f"e-{size}", Body=b"x" * size)
    spent = time.monotonic() - began
    check(spent < 2, f"a {size}-byte PUT took {spent:.1f} s")
    began = time.monotonic()
    got = s3.get_object(Bucket=bucket, Key=f"e-{size}")["Body"].read()
    check(got == b"x" * size, f"the {size}-byte object read back")
    check(time.monotonic() - began < 2, f"the GET after a {size}-byte PUT was slow")
