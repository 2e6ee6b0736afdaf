"""boto3 against a running shardgate, every request sent with the W3C
`traceparent` given as argv[1]: a bucket, a PUT and a GET of one object.
Run by tests/cli.rs (OpenTelemetry traces); exits non-zero on failure."""

import sys

from gateway_client import check, client

traceparent = sys.argv[1]
s3 = client()
s3.meta.events.register("before-send.s3", lambda request, **_: request.headers.__setitem__("traceparent", traceparent))
s3.create_bucket(Bucket="traced")
s3.put_object(Bucket="traced", Key="k", Body=b"x" * 100_000)
check(s3.get_object(Bucket="traced", Key="k")["Body"].read() == b"x" * 100_000, "the object reads back")
