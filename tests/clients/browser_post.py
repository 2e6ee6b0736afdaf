"""Browser POST uploads (issue 19) against a running shardgate: forms
made by boto3's generate_presigned_post and sent as a browser sends them
(multipart/form-data, the file last). Every policy condition holds, with
the codes S3 returns; `${filename}` becomes the file's name; the form's
ACL, success_action_status and success_action_redirect are honoured;
an unsigned form is decided per key by the bucket policy. Run by
tests/s3_clients.rs; exits non-zero on the first failed check."""

import json
import time
import urllib.error
import urllib.request
import uuid

from gateway_client import check, client, curl

s3 = client()
B = "forms"
s3.create_bucket(Bucket=B)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def post(url, fields, filename="hello.txt", content=b"hi there", boundary=None):
    """POSTs a form as a browser does: (status, headers, body)."""
    boundary = boundary or uuid.uuid4().hex
    body = b""
    for k, v in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
             f"Content-Type: text/plain\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def form(key, conditions, fields=None, expires=300):
    return s3.generate_presigned_post(B, key, Fields=fields or {}, Conditions=conditions, ExpiresIn=expires)


def code(body):
    text = body.decode(errors="replace")
    return text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in text else text


# ${filename}, the form's ACL and success_action_status 201 (an XML answer
# naming the object as stored).
conditions = [["starts-with", "$key", "uploads/"], ["content-length-range", 1, 1000],
              {"acl": "public-read"}, {"success_action_status": "201"}]
p = form("uploads/${filename}", conditions, {"acl": "public-read", "success_action_status": "201"})
status, _, body = post(p["url"], p["fields"], filename="hello.txt")
check(status == 201 and b"<Key>uploads/hello.txt</Key>" in body, f"201 with the key: {status} {body[:300]}")
check(s3.get_object(Bucket=B, Key="uploads/hello.txt")["Body"].read() == b"hi there", "the file is stored")
check(curl(f"/{B}/uploads/hello.txt") == (200, b"hi there"), "its public-read ACL holds")
# A path in the file's name: its last component.
status, _, _ = post(p["url"], p["fields"], filename="C:\\Users\\me\\notes.txt")
check(status == 201 and s3.head_object(Bucket=B, Key="uploads/notes.txt")["ContentLength"] == 8,
      f"the last path component: {status}")

# content-length-range: EntityTooLarge and EntityTooSmall (400).
status, _, body = post(p["url"], p["fields"], content=b"x" * 1001)
check((status, code(body)) == (400, "EntityTooLarge"), f"over the range: {status} {body[:200]}")
status, _, body = post(p["url"], p["fields"], content=b"")
check((status, code(body)) == (400, "EntityTooSmall"), f"under the range: {status} {body[:200]}")

# A field against a condition, or a field no condition names: 403.
bad = dict(p["fields"], acl="private")
status, _, body = post(p["url"], bad)
check((status, code(body)) == (403, "AccessDenied"), f"acl against the policy: {status} {body[:200]}")
bad = dict(p["fields"], key="elsewhere/${filename}")
status, _, body = post(p["url"], bad)
check((status, code(body)) == (403, "AccessDenied"), f"key against starts-with: {status} {body[:200]}")
bad = dict(p["fields"], **{"x-amz-meta-extra": "1"})
status, _, body = post(p["url"], bad)
check((status, code(body)) == (403, "AccessDenied"), f"a field the policy does not name: {status} {body[:200]}")
check("Contents" not in s3.list_objects_v2(Bucket=B, Prefix="elsewhere/"), "nothing written when refused")

# What the request sent is escaped in the answer: no markup gets through.
p = form("esc.txt", [{"x-amz-meta-a": "<b>bold</b>"}], {"x-amz-meta-a": "<b>bold</b>"})
status, _, body = post(p["url"], dict(p["fields"], **{"x-amz-meta-a": "plain"}))
check(status == 403 and b"<b>" not in body and b"&lt;b&gt;" in body, f"escaped: {status} {body[:300]}")

# A form that s3s and the gateway could read two ways is refused whole: a
# field given twice, or a part renamed by a second Content-Disposition.
p = form("twice.txt", [["starts-with", "$acl", ""]], {"acl": "private"})
status, _, body = post(p["url"], dict(p["fields"], ACL="public-read"))
check((status, code(body)) == (400, "MalformedPOSTRequest"), f"a field given twice: {status} {body[:200]}")

# The file's name cannot smuggle a boundary into the key: the form would
# read as other fields once it is put in.
p = form("uploads/${filename}", [["starts-with", "$key", "uploads/"]])
smuggled = dict(p["fields"], key="uploads/x\r\n${filename}")
status, _, body = post(p["url"], smuggled, filename="--sgBOUNDARY", boundary="sgBOUNDARY")
check((status, code(body)) == (400, "MalformedPOSTRequest"), f"a smuggled boundary: {status} {body[:200]}")
# A form's acl the policy does not name is refused, not applied.
status, _, body = post(p["url"], dict(p["fields"], acl="public-read"))
check((status, code(body)) == (403, "AccessDenied"), f"an acl the policy does not name: {status} {body[:200]}")
check("Contents" not in s3.list_objects_v2(Bucket=B, Prefix="uploads/x"), "nothing written")

# The default answer is 204; success_action_redirect gets 303 to the URL
# with bucket, key and ETag.
p = form("plain.txt", [])
status, _, body = post(p["url"], p["fields"])
check(status == 204 and body == b"", f"default 204: {status} {body[:200]}")
target = "http://app.example/done"
p = form("redirected.txt", [{"success_action_redirect": target}], {"success_action_redirect": target})
status, headers, _ = post(p["url"], p["fields"])
location = headers.get("Location", "")
check(status == 303 and location.startswith(target + "?") and "key=redirected.txt" in location
      and "bucket=forms" in location and "etag=" in location, f"303: {status} {location}")

# An expired form is refused.
p = form("late.txt", [], expires=1)
time.sleep(2)
status, _, body = post(p["url"], p["fields"])
check((status, code(body)) == (403, "AccessDenied"), f"expired: {status} {body[:200]}")

# An unsigned form is anyone's: decided per key, by the bucket policy.
status, _, body = post(f"{p['url']}", {"key": "drop/a.txt"})
check((status, code(body)) == (403, "AccessDenied"), f"unsigned, no policy: {status} {body[:200]}")
drop = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject",
                       "Resource": f"arn:aws:s3:::{B}/drop/*"}]}
s3.put_bucket_policy(Bucket=B, Policy=json.dumps(drop))
status, _, body = post(p["url"], {"key": "drop/a.txt"})
check(status == 204, f"unsigned, into the drop box: {status} {body[:200]}")
status, _, body = post(p["url"], {"key": "private/a.txt"})
check((status, code(body)) == (403, "AccessDenied"), f"unsigned, outside it: {status} {body[:200]}")
status, _, body = post(p["url"], {"key": "drop/b.txt", "acl": "public-read"})
check((status, code(body)) == (403, "AccessDenied"), f"unsigned, publishing: {status} {body[:200]}")
status, _, body = post(p["url"], {"key": "drop/c.txt", "x-amz-grant-read": 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'})
check((status, code(body)) == (403, "AccessDenied"), f"unsigned, granting: {status} {body[:200]}")
status, _, body = post(p["url"], {"key": "drop/d.txt", "x-amz-object-lock-legal-hold": "ON"})
check((status, code(body)) == (403, "AccessDenied"), f"unsigned, locking: {status} {body[:200]}")
s3.delete_bucket_policy(Bucket=B)

for o in s3.list_objects_v2(Bucket=B).get("Contents", []):
    s3.delete_object(Bucket=B, Key=o["Key"])
s3.delete_bucket(Bucket=B)
print("browser_post: all checks passed")
