"""boto3 and a browser's requests (urllib, unsigned preflights and
presigned GETs with an Origin) against a running shardgate: bucket CORS.
PutBucketCors, GetBucketCors, DeleteBucketCors with S3's error codes; a
preflight is allowed by the first matching rule and refused (403
AccessForbidden) otherwise; a real request from an allowed origin gets
the Access-Control-* headers, errors too; a deleted configuration allows
nothing. Run by tests/s3_clients.rs; exits non-zero on the first failed
check."""

import os
import urllib.error
import urllib.request

from gateway_client import check, client, expect_error

s3 = client()
endpoint = os.environ["S3_ENDPOINT"]
B = "web"
s3.create_bucket(Bucket=B)
s3.put_object(Bucket=B, Key="page.json", Body=b'{"hello": "browser"}')


def http(method, path_or_url, headers):
    """(status, headers in lowercase, body) of a request, errors included."""
    url = path_or_url if path_or_url.startswith("http") else endpoint + path_or_url
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def preflight(origin, method, headers=None, path=f"/{B}/page.json"):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return http("OPTIONS", path, h)


# No configuration: GetBucketCors says so, preflights are refused.
expect_error("NoSuchCORSConfiguration", s3.get_bucket_cors, Bucket=B)
status, _, body = preflight("https://app.example.com", "GET")
check(status == 403 and b"AccessForbidden" in body, f"no CORS: preflight refused ({status} {body})")
expect_error("NoSuchBucket", s3.put_bucket_cors, Bucket="nope",
             CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]})

# Bad configurations.
expect_error("InvalidRequest", s3.put_bucket_cors, Bucket=B,
             CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]})
expect_error("InvalidRequest", s3.put_bucket_cors, Bucket=B,
             CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["https://*.*.com"], "AllowedMethods": ["GET"]}]})
expect_error("InvalidArgument", s3.put_bucket_cors, Bucket=B,
             CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101})

rules = [
    {"ID": "app", "AllowedOrigins": ["https://*.example.com"], "AllowedMethods": ["GET", "PUT"],
     "AllowedHeaders": ["content-type", "x-amz-*"], "ExposeHeaders": ["ETag", "x-amz-version-id"],
     "MaxAgeSeconds": 600},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"]},
]
s3.put_bucket_cors(Bucket=B, CORSConfiguration={"CORSRules": rules})
got = s3.get_bucket_cors(Bucket=B)["CORSRules"]
check(got == rules, f"GetBucketCors returns the rules as set: {got}")

# A preflight the first rule allows: its headers.
status, h, _ = preflight("https://app.example.com", "PUT", "Content-Type, X-Amz-Date")
check(status == 200, f"allowed preflight: {status}")
check(h.get("access-control-allow-origin") == "https://app.example.com", f"the origin is allowed: {h}")
check(h.get("access-control-allow-methods") == "GET, PUT", f"the rule's methods: {h}")
check(h.get("access-control-allow-headers") == "content-type, x-amz-date", f"the headers asked for: {h}")
check(h.get("access-control-max-age") == "600", f"MaxAgeSeconds: {h}")
check(h.get("access-control-expose-headers") == "ETag, x-amz-version-id", f"ExposeHeaders: {h}")
check(h.get("access-control-allow-credentials") == "true", f"credentials for a named origin: {h}")
check("Origin" in h.get("vary", ""), f"Vary: Origin: {h}")

# Any origin may GET (rule 2): "*" and no credentials.
status, h, _ = preflight("https://elsewhere.org", "GET")
check(status == 200 and h.get("access-control-allow-origin") == "*", f"rule 2 allows any origin GET: {h}")
check("access-control-allow-credentials" not in h, "no credentials for *")

# Refused: a method no rule of that origin allows, a header not allowed.
status, _, body = preflight("https://elsewhere.org", "PUT")
check(status == 403 and b"AccessForbidden" in body, f"PUT from elsewhere refused: {status}")
status, _, _ = preflight("https://app.example.com", "PUT", "authorization-x")
check(status == 403, f"a header no rule allows: {status}")
status, _, body = http("OPTIONS", f"/{B}/page.json", {"Origin": "https://app.example.com"})
check(status == 400, f"a preflight without Access-Control-Request-Method: {status} {body}")
status, _, _ = preflight("https://app.example.com", "GET", path="/missing-bucket/x")
check(status == 403, f"a bucket that does not exist allows nothing: {status}")

# The real request (presigned, as a page would fetch it) gets the headers.
url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "page.json"}, ExpiresIn=300)
status, h, body = http("GET", url, {"Origin": "https://app.example.com"})
check(status == 200 and body == b'{"hello": "browser"}', f"presigned GET: {status}")
check(h.get("access-control-allow-origin") == "https://app.example.com", f"the GET allows the page: {h}")
check(h.get("access-control-expose-headers") == "ETag, x-amz-version-id", f"and exposes: {h}")
status, h, _ = http("GET", url, {})
check("access-control-allow-origin" not in h, "no Origin, no CORS headers")
url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "absent"}, ExpiresIn=300)
status, h, _ = http("GET", url, {"Origin": "https://app.example.com"})
check(status == 404 and h.get("access-control-allow-origin") == "https://app.example.com",
      f"an error answer carries them too (the page can read the error): {status} {h}")
url = s3.generate_presigned_url("delete_object", Params={"Bucket": B, "Key": "page.json"}, ExpiresIn=300)
status, h, _ = http("DELETE", url, {"Origin": "https://app.example.com"})
check(status == 204 and "access-control-allow-origin" not in h, f"DELETE is not allowed to the page: {h}")

# Deleted: nothing is allowed any more.
s3.delete_bucket_cors(Bucket=B)
expect_error("NoSuchCORSConfiguration", s3.get_bucket_cors, Bucket=B)
status, _, _ = preflight("https://app.example.com", "GET")
check(status == 403, f"after DeleteBucketCors: {status}")

print("cors: all checks passed")
