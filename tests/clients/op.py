"""One S3 operation with boto3, for the fault tests.

    op.py put BUCKET KEY FILE     exit 0 once the PUT is acknowledged
    op.py get BUCKET KEY FILE     writes the object to FILE
    op.py mb BUCKET
    op.py ls BUCKET               prints one key per line

An S3 error prints "ERROR <code> <http status> <message>" and exits 3;
anything else (connection refused, reset) exits 4."""

import sys

from gateway_client import client
from botocore.exceptions import ClientError

s3 = client()

op, args = sys.argv[1], sys.argv[2:]
try:
    if op == "put":
        bucket, key, path = args
        with open(path, "rb") as f:
            s3.put_object(Bucket=bucket, Key=key, Body=f)
    elif op == "get":
        bucket, key, path = args
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with open(path, "wb") as f:
            f.write(body)
    elif op == "mb":
        s3.create_bucket(Bucket=args[0])
    elif op == "ls":
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=args[0])
        for page in pages:
            for o in page.get("Contents", []):
                print(o["Key"])
    else:
        sys.exit(f"unknown op {op}")
except ClientError as e:
    err = e.response["Error"]
    status = e.response["ResponseMetadata"]["HTTPStatusCode"]
    print("ERROR", err.get("Code"), status, err.get("Message"))
    sys.exit(3)
except Exception as e:  # connection refused or reset: the server died
    print("FAILED", type(e).__name__, e)
    sys.exit(4)
