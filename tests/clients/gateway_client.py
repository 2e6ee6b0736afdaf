"""The boto3 client the one-shot test scripts share: the gateway of
S3_ENDPOINT, SigV4, one attempt (a test sees every error), short connect
and bounded read timeouts."""

import os

import boto3
from botocore.client import Config


def client(pool=10, checksums="when_supported", endpoint=None, read_timeout=60):
    """`checksums`: botocore's request_checksum_calculation (when_supported
    sends a CRC32 with every body; when_required, only where S3 needs one).
    `endpoint`: another gateway than S3_ENDPOINT's."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ["S3_ENDPOINT"],
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            retries={"max_attempts": 1},
            connect_timeout=5,
            read_timeout=read_timeout,
            max_pool_connections=pool,
            request_checksum_calculation=checksums,
        ),
    )


def check(cond, what):
    """Exits non-zero with `what` unless `cond` holds."""
    if not cond:
        import sys

        print("FAILED:", what, file=sys.stderr)
        sys.exit(1)


def error_code(fn, *args, **kwargs):
    """The S3 error code and HTTP status of a call (None, 200 if it worked)."""
    from botocore.exceptions import ClientError

    try:
        fn(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    return None, 200


def expect_error(code, fn, *args, **kwargs):
    got, status = error_code(fn, *args, **kwargs)
    check(got == code, f"{fn.__name__}: expected {code}, got {got} ({status})")
    return status


def as_user(key, secret):
    """A boto3 client signing with another user's key, retrying nothing."""
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", retries={"max_attempts": 1}),
    )


def anonymous():
    """A boto3 client that signs nothing: anyone on the web."""
    from botocore import UNSIGNED

    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )


def curl(url):
    """A plain unsigned GET of a path on the gateway, or of a URL, as curl
    sends it: (status, body)."""
    import urllib.error
    import urllib.request

    url = url if url.startswith("http") else os.environ["S3_ENDPOINT"] + url
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
