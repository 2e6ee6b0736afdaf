"""Bucket policies and Public Access Block against a running shardgate,
with boto3 (signed, unsigned and presigned) and plain HTTP as curl would
send it. alice owns alice-b; bob is another user; anonymous is anyone.
Run by tests/admin.rs after users.py's setup; exits non-zero on the first
failed check.

  policies.py ALICE_KEY ALICE_SECRET BOB_KEY BOB_SECRET"""

import json
import sys

from gateway_client import anonymous as anonymous_client, as_user, check, client, curl, expect_error

alice_key, alice_secret, bob_key, bob_secret = sys.argv[1:5]


admin = client()
alice = as_user(alice_key, alice_secret)
bob = as_user(bob_key, bob_secret)
anonymous = anonymous_client()


def read(c, key):
    return c.get_object(Bucket="alice-b", Key=key)["Body"].read()


B = "alice-b"
alice.put_object(Bucket=B, Key="public/cat.txt", Body=b"meow")
alice.put_object(Bucket=B, Key="private/secret.txt", Body=b"hush")

# No policy: nobody but the owners.
expect_error("NoSuchBucketPolicy", alice.get_bucket_policy, Bucket=B)
expect_error("AccessDenied", anonymous.get_object, Bucket=B, Key="public/cat.txt")
status, body = curl(f"/{B}/public/cat.txt")
check(status == 403 and b"AccessDenied" in body, f"curl without a policy: {status} {body[:200]}")
# S3's order: a signed request for a missing bucket learns it is missing;
# an unsigned one learns nothing.
expect_error("NoSuchBucket", bob.get_object, Bucket="no-such-bucket", Key="k")
expect_error("AccessDenied", anonymous.get_object, Bucket="no-such-bucket", Key="k")
expect_error("AccessDenied", anonymous.list_buckets)

# A malformed policy is refused with the reason.
expect_error("MalformedPolicy", alice.put_bucket_policy, Bucket=B, Policy="{not json")
bad_resource = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
                "Action": "s3:GetObject", "Resource": "arn:aws:s3:::someone-else/*"}]}
expect_error("MalformedPolicy", alice.put_bucket_policy, Bucket=B, Policy=json.dumps(bad_resource))
# Only the owner sets it.
policy = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "public", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{B}/public/*"},
        {"Sid": "bob", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/bob"},
         "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{B}", f"arn:aws:s3:::{B}/*"]},
        {"Sid": "not-bob", "Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::123456789012:user/bob"},
         "Action": "s3:*", "Resource": f"arn:aws:s3:::{B}/private/*"},
    ],
}
expect_error("AccessDenied", bob.put_bucket_policy, Bucket=B, Policy=json.dumps(policy))
alice.put_bucket_policy(Bucket=B, Policy=json.dumps(policy))
check(json.loads(alice.get_bucket_policy(Bucket=B)["Policy"]) == policy, "GetBucketPolicy returns it")
check(alice.get_bucket_policy_status(Bucket=B)["PolicyStatus"]["IsPublic"] is True, "the policy is public")

# Anyone reads public/, with boto3 unsigned and with plain HTTP.
check(read(anonymous, "public/cat.txt") == b"meow", "anonymous reads public/")
status, body = curl(f"/{B}/public/cat.txt")
check(status == 200 and body == b"meow", f"curl reads public/: {status}")
expect_error("AccessDenied", anonymous.get_object, Bucket=B, Key="private/secret.txt")
expect_error("AccessDenied", anonymous.list_objects_v2, Bucket=B)
expect_error("AccessDenied", anonymous.put_object, Bucket=B, Key="public/new", Body=b"x")
# A presigned URL from bob (signed, allowed by the policy) works; so does
# the owner's for a private key; an unsigned request for it does not.
url = bob.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "public/cat.txt"}, ExpiresIn=60)
check(curl(url) == (200, b"meow"), "bob's presigned URL reads public/")
url = alice.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "private/secret.txt"}, ExpiresIn=60)
check(curl(url) == (200, b"hush"), "alice's presigned URL reads private/")

# Bob: what the policy allows, and the Deny on private/ wins over the
# Allow on everything.
check(read(bob, "public/cat.txt") == b"meow", "bob reads public/")
keys = [o["Key"] for o in bob.list_objects_v2(Bucket=B)["Contents"]]
check("private/secret.txt" in keys, f"bob lists: {keys}")
bob.put_object(Bucket=B, Key="dropbox/from-bob", Body=b"hello alice")
check(read(alice, "dropbox/from-bob") == b"hello alice", "alice reads what bob dropped")
expect_error("AccessDenied", bob.get_object, Bucket=B, Key="private/secret.txt")
expect_error("AccessDenied", bob.put_object, Bucket=B, Key="private/overwrite", Body=b"x")
expect_error("AccessDenied", bob.delete_object, Bucket=B, Key="public/cat.txt")
expect_error("AccessDenied", bob.get_bucket_policy, Bucket=B)
expect_error("AccessDenied", bob.delete_bucket, Bucket=B)
expect_error("AccessDenied", bob.copy_object, Bucket="bob-b", Key="copied",
             CopySource={"Bucket": B, "Key": "private/secret.txt"})
# A tag on a PUT needs s3:PutObjectTagging too, as in S3.
expect_error("AccessDenied", bob.put_object, Bucket=B, Key="dropbox/tagged", Body=b"x", Tagging="a=b")
bob.copy_object(Bucket="bob-b", Key="copied", CopySource={"Bucket": B, "Key": "public/cat.txt"})
check(bob.get_object(Bucket="bob-b", Key="copied")["Body"].read() == b"meow", "bob copies from public/")
bob.delete_object(Bucket="bob-b", Key="copied")

# DeleteObjects decides each key: bob may delete under dropbox/ but the
# Deny on private/ holds for that key alone.
deleting = dict(policy)
deleting["Statement"] = policy["Statement"] + [
    {"Sid": "bob-deletes", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/bob"},
     "Action": "s3:DeleteObject", "Resource": f"arn:aws:s3:::{B}/*"}]
alice.put_bucket_policy(Bucket=B, Policy=json.dumps(deleting))
bob.put_object(Bucket=B, Key="dropbox/old", Body=b"x")
out = bob.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "dropbox/old"}, {"Key": "private/secret.txt"}]})
check([d["Key"] for d in out.get("Deleted", [])] == ["dropbox/old"], f"DeleteObjects deleted: {out}")
check([(e["Key"], e["Code"]) for e in out.get("Errors", [])] == [("private/secret.txt", "AccessDenied")],
      f"DeleteObjects refused: {out}")
check(read(alice, "private/secret.txt") == b"hush", "the denied key is still there")
alice.put_bucket_policy(Bucket=B, Policy=json.dumps(policy))

# A policy that gives everyone everything still keeps the bucket's
# configuration and deletion from unsigned requesters.
everything = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*",
                             "Resource": [f"arn:aws:s3:::{B}", f"arn:aws:s3:::{B}/*"]}]}
alice.put_bucket_policy(Bucket=B, Policy=json.dumps(everything))
check(read(anonymous, "private/secret.txt") == b"hush", "s3:* to everyone lets anyone read")
expect_error("AccessDenied", anonymous.delete_bucket_policy, Bucket=B)
expect_error("AccessDenied", anonymous.put_bucket_policy, Bucket=B, Policy=json.dumps(policy))
expect_error("AccessDenied", anonymous.delete_bucket, Bucket=B)
alice.put_bucket_policy(Bucket=B, Policy=json.dumps(policy))

# Public Access Block: RestrictPublicBuckets keeps the public statement
# from anonymous requesters (bob, named, still reads); BlockPublicPolicy
# refuses a public policy.
expect_error("NoSuchPublicAccessBlockConfiguration", alice.get_public_access_block, Bucket=B)
alice.put_public_access_block(Bucket=B, PublicAccessBlockConfiguration={
    "RestrictPublicBuckets": True, "BlockPublicPolicy": True})
got = alice.get_public_access_block(Bucket=B)["PublicAccessBlockConfiguration"]
check(got == {"BlockPublicAcls": False, "IgnorePublicAcls": False, "BlockPublicPolicy": True,
              "RestrictPublicBuckets": True}, f"GetPublicAccessBlock: {got}")
expect_error("AccessDenied", anonymous.get_object, Bucket=B, Key="public/cat.txt")
check(read(bob, "public/cat.txt") == b"meow", "bob still reads under RestrictPublicBuckets")
expect_error("AccessDenied", alice.put_bucket_policy, Bucket=B, Policy=json.dumps(policy))
alice.delete_public_access_block(Bucket=B)
check(read(anonymous, "public/cat.txt") == b"meow", "anonymous reads again once the block is gone")

# A policy that denies everyone everything: the owner is locked out too,
# and the administrator (the account's root) can still remove it.
lockout = {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                          "Resource": [f"arn:aws:s3:::{B}", f"arn:aws:s3:::{B}/*"]}]}
alice.put_bucket_policy(Bucket=B, Policy=json.dumps(lockout))
expect_error("AccessDenied", alice.get_object, Bucket=B, Key="public/cat.txt")
expect_error("AccessDenied", admin.get_object, Bucket=B, Key="public/cat.txt")
expect_error("AccessDenied", alice.delete_bucket_policy, Bucket=B)
admin.delete_bucket_policy(Bucket=B)
expect_error("NoSuchBucketPolicy", alice.get_bucket_policy, Bucket=B)

# Without the policy, back to the owners alone.
check(read(alice, "public/cat.txt") == b"meow", "alice reads again")
expect_error("AccessDenied", anonymous.get_object, Bucket=B, Key="public/cat.txt")
expect_error("AccessDenied", bob.get_object, Bucket=B, Key="public/cat.txt")
for key in ["public/cat.txt", "private/secret.txt", "dropbox/from-bob"]:
    alice.delete_object(Bucket=B, Key=key)
print("policies: all checks passed")
