"""A PUT with a streaming-signed body (aws-chunked,
STREAMING-AWS4-HMAC-SHA256-PAYLOAD), signed here by hand as the SigV4
specification describes, since botocore only streams over HTTPS.

    streaming_put.py BUCKET KEY SIZE [tamper]

Without "tamper": PUTs SIZE bytes in 64 KiB chunks, then reads the object
back with boto3 and compares. With "tamper": flips a byte of the third
chunk after signing, expects a 403 SignatureDoesNotMatch, and checks the
key does not exist. Exits non-zero on failure."""

import datetime
import hashlib
import hmac
import os
import sys
import urllib.parse
import http.client

import boto3
from botocore.exceptions import ClientError

endpoint = urllib.parse.urlparse(os.environ["S3_ENDPOINT"])
access = os.environ["AWS_ACCESS_KEY_ID"]
secret = os.environ["AWS_SECRET_ACCESS_KEY"]
bucket, key, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
tamper = len(sys.argv) > 4 and sys.argv[4] == "tamper"
region, service = "us-east-1", "s3"
CHUNK = 64 * 1024

now = datetime.datetime.now(datetime.timezone.utc)
amz_date = now.strftime("%Y%m%dT%H%M%SZ")
date = now.strftime("%Y%m%d")
scope = f"{date}/{region}/{service}/aws4_request"
host = endpoint.netloc
path = f"/{bucket}/{urllib.parse.quote(key)}"
data = os.urandom(size)


def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


signing_key = sign(sign(sign(sign(("AWS4" + secret).encode(), date), region), service), "aws4_request")
chunks = [data[i:i + CHUNK] for i in range(0, size, CHUNK)] + [b""]
sig_len = 64
encoded_len = sum(len(f"{len(c):x}") + len(";chunk-signature=") + sig_len + 2 + len(c) + 2 for c in chunks)

headers = {
    "host": host,
    "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "x-amz-date": amz_date,
    "x-amz-decoded-content-length": str(size),
    "content-encoding": "aws-chunked",
    "content-length": str(encoded_len),
}
signed = sorted(headers)
canonical = "\n".join([
    "PUT", path, "",
    "".join(f"{h}:{headers[h]}\n" for h in signed),
    ";".join(signed),
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
])
to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
seed = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
headers["authorization"] = (
    f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={';'.join(signed)}, Signature={seed}"
)

body = bytearray()
previous = seed
empty_hash = hashlib.sha256(b"").hexdigest()
for i, c in enumerate(chunks):
    string = "\n".join([
        "AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, empty_hash, hashlib.sha256(c).hexdigest(),
    ])
    sig = hmac.new(signing_key, string.encode(), hashlib.sha256).hexdigest()
    if tamper and i == 2:
        c = bytes([c[0] ^ 1]) + c[1:]
    body += f"{len(c):x};chunk-signature={sig}\r\n".encode() + c + b"\r\n"
    previous = sig
assert len(body) == encoded_len

conn = http.client.HTTPConnection(endpoint.hostname, endpoint.port, timeout=60)
conn.request("PUT", path, body=bytes(body), headers=headers)
resp = conn.getresponse()
text = resp.read()

s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name=region)
if tamper:
    if resp.status != 403 or b"SignatureDoesNotMatch" not in text:
        sys.exit(f"tampered chunk: expected 403 SignatureDoesNotMatch, got {resp.status} {text[:300]}")
    try:
        s3.head_object(Bucket=bucket, Key=key)
        sys.exit("a rejected streaming PUT left an object behind")
    except ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] != 404:
            raise
    print("tampered chunk refused, nothing stored")
else:
    if resp.status != 200:
        sys.exit(f"streaming PUT failed: {resp.status} {text[:300]}")
    got = s3.get_object(Bucket=bucket, Key=key)
    back = got["Body"].read()
    if back != data:
        sys.exit("streaming PUT stored different bytes")
    if got["ETag"] != f'"{hashlib.md5(data).hexdigest()}"':
        sys.exit(f"ETag {got['ETag']} is not the MD5 of the decoded body")
    print(f"streaming-signed PUT of {size} bytes round-tripped")
