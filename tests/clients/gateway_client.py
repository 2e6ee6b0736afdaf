"""The boto3 client the one-shot test scripts share: the gateway of
S3_ENDPOINT, SigV4, one attempt (a test sees every error), short connect
and bounded read timeouts."""

import os

import boto3
from botocore.client import Config


def client(pool=10):
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            retries={"max_attempts": 1},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=pool,
        ),
    )
