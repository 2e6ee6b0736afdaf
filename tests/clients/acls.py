"""ACLs and Object Ownership against a running shardgate, with boto3
(signed, unsigned and presigned) and plain HTTP as curl would send it.
alice and bob are users; anonymous is anyone. Run by tests/admin.rs after
users.py's setup; exits non-zero on the first failed check.

  acls.py ALICE_KEY ALICE_SECRET BOB_KEY BOB_SECRET"""

import json
import sys

from gateway_client import anonymous as anonymous_client, as_user, check, curl, expect_error

alice_key, alice_secret, bob_key, bob_secret = sys.argv[1:5]

alice = as_user(alice_key, alice_secret)
bob = as_user(bob_key, bob_secret)
anonymous = anonymous_client()


def read(c, key, bucket=None):
    return c.get_object(Bucket=bucket or B, Key=key)["Body"].read()


def grants(acl):
    """An ACL's grants as (grantee id or group name, permission)."""
    out = set()
    for g in acl["Grants"]:
        who = g["Grantee"].get("ID") or g["Grantee"]["URI"].rsplit("/", 1)[-1]
        out.add((who, g["Permission"]))
    return out


alice_id = alice.list_buckets()["Owner"]["ID"]
bob_id = bob.list_buckets()["Owner"]["ID"]
check(alice_id != bob_id, "users have their own canonical ids")

B = "alice-acls"
alice.create_bucket(Bucket=B)

# Defaults: private, the owner with FULL_CONTROL, named on the ACL.
acl = alice.get_bucket_acl(Bucket=B)
check(acl["Owner"] == {"ID": alice_id, "DisplayName": "alice"}, f"bucket owner: {acl['Owner']}")
check(grants(acl) == {(alice_id, "FULL_CONTROL")}, f"default bucket ACL: {acl}")
alice.put_object(Bucket=B, Key="private.txt", Body=b"hush")
acl = alice.get_object_acl(Bucket=B, Key="private.txt")
check(grants(acl) == {(alice_id, "FULL_CONTROL")}, f"default object ACL: {acl}")
expect_error("AccessDenied", anonymous.get_object, Bucket=B, Key="private.txt")
expect_error("AccessDenied", bob.get_object, Bucket=B, Key="private.txt")
status, body = curl(f"/{B}/private.txt")
check(status == 403 and b"AccessDenied" in body, f"curl, private: {status} {body[:200]}")
expect_error("AccessDenied", bob.get_object_acl, Bucket=B, Key="private.txt")

# public-read: anyone reads it, with curl, unsigned boto3, and a URL bob
# presigned; nobody else may change it or read its ACL.
alice.put_object(Bucket=B, Key="public.txt", Body=b"hello world", ACL="public-read")
acl = alice.get_object_acl(Bucket=B, Key="public.txt")
check(grants(acl) == {(alice_id, "FULL_CONTROL"), ("AllUsers", "READ")}, f"public-read: {acl}")
status, body = curl(f"/{B}/public.txt")
check(status == 200 and body == b"hello world", f"curl, public-read: {status} {body[:200]}")
check(read(anonymous, "public.txt") == b"hello world", "unsigned boto3 reads public-read")
check(anonymous.head_object(Bucket=B, Key="public.txt")["ContentLength"] == 11, "unsigned HEAD")
url = bob.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "public.txt"}, ExpiresIn=300)
status, body = curl(url)
check(status == 200 and body == b"hello world", f"bob's presigned URL: {status}")
url = bob.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "private.txt"}, ExpiresIn=300)
check(curl(url)[0] == 403, "bob's presigned URL to a private object is refused")
expect_error("AccessDenied", anonymous.put_object_acl, Bucket=B, Key="public.txt", ACL="public-read-write")
expect_error("AccessDenied", bob.put_object_acl, Bucket=B, Key="public.txt", ACL="private")
expect_error("AccessDenied", anonymous.list_objects_v2, Bucket=B)
expect_error("AccessDenied", anonymous.put_object, Bucket=B, Key="x", Body=b"x")

# authenticated-read: every signed requester, nobody unsigned.
alice.put_object(Bucket=B, Key="members.txt", Body=b"members", ACL="authenticated-read")
check(read(bob, "members.txt") == b"members", "bob, signed, reads authenticated-read")
expect_error("AccessDenied", anonymous.get_object, Bucket=B, Key="members.txt")
acl = alice.get_object_acl(Bucket=B, Key="members.txt")
check(("AuthenticatedUsers", "READ") in grants(acl), f"authenticated-read: {acl}")

# A grant to one user, by canonical id in a header, then in XML.
alice.put_object_acl(Bucket=B, Key="private.txt", GrantRead=f'id="{bob_id}"')
check(read(bob, "private.txt") == b"hush", "bob reads what alice granted him")
expect_error("AccessDenied", anonymous.get_object, Bucket=B, Key="private.txt")
expect_error("AccessDenied", bob.get_object_acl, Bucket=B, Key="private.txt")
policy = alice.get_object_acl(Bucket=B, Key="private.txt")
policy.pop("ResponseMetadata")
policy["Grants"].append({"Grantee": {"Type": "CanonicalUser", "ID": bob_id}, "Permission": "READ_ACP"})
alice.put_object_acl(Bucket=B, Key="private.txt", AccessControlPolicy=policy)
acl = bob.get_object_acl(Bucket=B, Key="private.txt")
# Grant headers replace the whole ACL (as in S3): the owner keeps its
# control without a grant.
check(grants(acl) == {(bob_id, "READ"), (bob_id, "READ_ACP")}, f"the XML ACL, as bob reads it: {acl}")
bob_grant = [g for g in acl["Grants"] if g["Grantee"].get("ID") == bob_id][0]
check(bob_grant["Grantee"].get("DisplayName") == "bob", f"grantee display name: {bob_grant}")

# What S3 refuses.
expect_error("InvalidRequest", alice.put_object_acl, Bucket=B, Key="private.txt", ACL="private",
             GrantRead=f'id="{bob_id}"')
expect_error("UnresolvableGrantByEmailAddress", alice.put_object_acl, Bucket=B, Key="private.txt",
             GrantRead='emailAddress="bob@example.com"')
expect_error("InvalidArgument", alice.put_object_acl, Bucket=B, Key="private.txt",
             GrantRead='id="0123456789abcdef"')
expect_error("InvalidArgument", alice.put_object, Bucket=B, Key="k", Body=b"", ACL="no-such-acl")
expect_error("NoSuchKey", alice.put_object_acl, Bucket=B, Key="missing", ACL="public-read")
expect_error("NoSuchKey", alice.get_object_acl, Bucket=B, Key="missing")
other = dict(policy, Owner={"ID": bob_id})
expect_error("AccessDenied", alice.put_object_acl, Bucket=B, Key="private.txt", AccessControlPolicy=other)
expect_error("AccessDenied", anonymous.put_bucket_acl, Bucket=B, ACL="public-read")
expect_error("AccessDenied", bob.put_bucket_acl, Bucket=B, ACL="public-read")

# A Deny in the bucket policy wins over an ACL that allows.
alice.put_object(Bucket=B, Key="denied/a.txt", Body=b"no", ACL="public-read")
check(curl(f"/{B}/denied/a.txt")[0] == 200, "public-read before the Deny")
deny = {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{B}/denied/*"}]}
alice.put_bucket_policy(Bucket=B, Policy=json.dumps(deny))
expect_error("AccessDenied", anonymous.get_object, Bucket=B, Key="denied/a.txt")
check(curl(f"/{B}/denied/a.txt")[0] == 403, "curl after the Deny")
check(read(anonymous, "public.txt") == b"hello world", "the Deny holds on its prefix only")
# A policy testing the object's own tags (s3:ExistingObjectTag/...).
alice.put_object(Bucket=B, Key="tagged/yes.txt", Body=b"yes", Tagging="class=public")
alice.put_object(Bucket=B, Key="tagged/no.txt", Body=b"no", Tagging="class=secret")
by_tag = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                         "Resource": f"arn:aws:s3:::{B}/*",
                         "Condition": {"StringEquals": {"s3:ExistingObjectTag/class": "public"}}}]}
alice.put_bucket_policy(Bucket=B, Policy=json.dumps(by_tag))
check(curl(f"/{B}/tagged/yes.txt") == (200, b"yes"), "a tag the policy allows")
check(curl(f"/{B}/tagged/no.txt")[0] == 403, "a tag it does not")
alice.put_object_tagging(Bucket=B, Key="tagged/no.txt", Tagging={"TagSet": [{"Key": "class", "Value": "public"}]})
check(curl(f"/{B}/tagged/no.txt") == (200, b"no"), "the tag as it is now counts")
alice.delete_bucket_policy(Bucket=B)

# Public Access Block: IgnorePublicAcls makes public grants count for
# nothing; BlockPublicAcls refuses new ones (on objects, writes, the bucket).
alice.put_public_access_block(Bucket=B, PublicAccessBlockConfiguration={"IgnorePublicAcls": True})
expect_error("AccessDenied", anonymous.get_object, Bucket=B, Key="public.txt")
check(read(bob, "private.txt") == b"hush", "a grant to a user still counts")
alice.put_public_access_block(Bucket=B, PublicAccessBlockConfiguration={"BlockPublicAcls": True})
check(read(anonymous, "public.txt") == b"hello world", "existing public ACLs count again")
expect_error("AccessDenied", alice.put_object, Bucket=B, Key="new.txt", Body=b"x", ACL="public-read")
expect_error("AccessDenied", alice.put_object_acl, Bucket=B, Key="private.txt", ACL="public-read")
expect_error("AccessDenied", alice.put_bucket_acl, Bucket=B, ACL="public-read")
expect_error("404", alice.head_object, Bucket=B, Key="new.txt")
alice.put_object(Bucket=B, Key="new.txt", Body=b"x", ACL="private")
alice.delete_public_access_block(Bucket=B)

# The bucket's ACL: public-read lists it to anyone; WRITE to bob lets him
# add objects, which he owns (ObjectWriter, the default) and alice, the
# bucket's owner, still reads.
alice.put_bucket_acl(Bucket=B, ACL="public-read")
listed = [o["Key"] for o in anonymous.list_objects_v2(Bucket=B)["Contents"]]
check("public.txt" in listed, f"anonymous lists a public-read bucket: {listed}")
check(curl(f"/{B}?list-type=2")[0] == 200, "curl lists it too")
alice.put_bucket_acl(Bucket=B, GrantWrite=f'id="{bob_id}"', GrantFullControl=f'id="{alice_id}"')
check(grants(alice.get_bucket_acl(Bucket=B)) == {(alice_id, "FULL_CONTROL"), (bob_id, "WRITE")},
      "GetBucketAcl after a grant by header")
expect_error("AccessDenied", anonymous.list_objects_v2, Bucket=B)
# Publishing needs s3:PutObjectAcl, which a WRITE grant is not; as the
# owner of what he wrote, bob may then set its ACL.
expect_error("AccessDenied", bob.put_object, Bucket=B, Key="from-bob.txt", Body=b"x", ACL="public-read")
expect_error("AccessDenied", bob.put_object, Bucket=B, Key="from-bob.txt", Body=b"x",
             GrantRead=f'id="{alice_id}"')
bob.put_object(Bucket=B, Key="from-bob.txt", Body=b"bob's", ACL="bucket-owner-full-control")
check(read(bob, "from-bob.txt") == b"bob's", "bob reads what he owns")
check(read(alice, "from-bob.txt") == b"bob's", "the bucket's owner reads it")
check(curl(f"/{B}/from-bob.txt")[0] == 403, "bob's object is private")
bob.put_object_acl(Bucket=B, Key="from-bob.txt", ACL="public-read")
check(curl(f"/{B}/from-bob.txt")[0] == 200, "bob's public-read object")
expect_error("AccessDenied", bob.delete_object_tagging, Bucket=B, Key="from-bob.txt")
acl = bob.get_object_acl(Bucket=B, Key="from-bob.txt")
check(acl["Owner"]["ID"] == bob_id, f"bob owns his object: {acl['Owner']}")
owners = {o["Key"]: o["Owner"]["ID"] for o in alice.list_objects(Bucket=B)["Contents"]}
check(owners["from-bob.txt"] == bob_id and owners["public.txt"] == alice_id, f"ListObjects owners: {owners}")
v2 = alice.list_objects_v2(Bucket=B)["Contents"]
check(all("Owner" not in o for o in v2), "ListObjectsV2 shows no owner unless asked")
v2 = alice.list_objects_v2(Bucket=B, FetchOwner=True)["Contents"]
check({o["Key"]: o["Owner"]["DisplayName"] for o in v2}["from-bob.txt"] == "bob", f"FetchOwner: {v2}")
# bob, owner of the object, sets its ACL; a multipart upload and a copy
# take theirs from their own headers.
bob.put_object_acl(Bucket=B, Key="from-bob.txt", ACL="private")
check(curl(f"/{B}/from-bob.txt")[0] == 403, "bob made it private")
up = bob.create_multipart_upload(Bucket=B, Key="bob-mp.txt")
part = bob.upload_part(Bucket=B, Key="bob-mp.txt", UploadId=up["UploadId"], PartNumber=1, Body=b"bob")
uploads = alice.list_multipart_uploads(Bucket=B)["Uploads"]
check(uploads[0]["Owner"]["ID"] == bob_id and uploads[0]["Initiator"]["ID"] == bob_id, f"upload owner: {uploads}")
bob.complete_multipart_upload(Bucket=B, Key="bob-mp.txt", UploadId=up["UploadId"],
                              MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
check(bob.get_object_acl(Bucket=B, Key="bob-mp.txt")["Owner"]["ID"] == bob_id, "bob owns his upload's object")
up = alice.create_multipart_upload(Bucket=B, Key="mp.txt", ACL="public-read")
part = alice.upload_part(Bucket=B, Key="mp.txt", UploadId=up["UploadId"], PartNumber=1, Body=b"multi")
alice.complete_multipart_upload(Bucket=B, Key="mp.txt", UploadId=up["UploadId"],
                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
check(curl(f"/{B}/mp.txt") == (200, b"multi"), "a multipart upload's public-read")
alice.copy_object(Bucket=B, Key="copy.txt", CopySource={"Bucket": B, "Key": "public.txt"})
check(curl(f"/{B}/copy.txt")[0] == 403, "a copy does not take its source's ACL")
alice.copy_object(Bucket=B, Key="copy.txt", CopySource={"Bucket": B, "Key": "private.txt"}, ACL="public-read")
check(curl(f"/{B}/copy.txt") == (200, b"hush"), "a copy with its own public-read")

# Object Ownership. None set at first; BucketOwnerEnforced needs a bucket
# ACL for the owner alone, then turns every ACL off.
expect_error("OwnershipControlsNotFoundError", alice.get_bucket_ownership_controls, Bucket=B)
enforced = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
expect_error("InvalidBucketAclWithObjectOwnership", alice.put_bucket_ownership_controls, Bucket=B,
             OwnershipControls=enforced)
alice.put_bucket_acl(Bucket=B, ACL="private")
alice.put_bucket_ownership_controls(Bucket=B, OwnershipControls=enforced)
got = alice.get_bucket_ownership_controls(Bucket=B)["OwnershipControls"]
check(got == enforced, f"GetBucketOwnershipControls: {got}")
expect_error("AccessDenied", anonymous.get_object, Bucket=B, Key="public.txt")
expect_error("AccessDenied", bob.get_object, Bucket=B, Key="private.txt")
expect_error("AccessControlListNotSupported", alice.put_object, Bucket=B, Key="n", Body=b"", ACL="public-read")
expect_error("AccessControlListNotSupported", alice.put_object_acl, Bucket=B, Key="public.txt", ACL="public-read")
expect_error("AccessControlListNotSupported", alice.put_bucket_acl, Bucket=B, ACL="public-read")
alice.put_object(Bucket=B, Key="n", Body=b"", ACL="bucket-owner-full-control")
check(grants(alice.get_object_acl(Bucket=B, Key="n")) == {(alice_id, "FULL_CONTROL")}, "owner-only ACL")
alice.delete_bucket_ownership_controls(Bucket=B)
check(read(anonymous, "public.txt") == b"hello world", "ACLs count again without the setting")

# CreateBucket takes an ACL and an Object Ownership.
bob.create_bucket(Bucket="bob-public", ACL="public-read")
bob.put_object(Bucket="bob-public", Key="k", Body=b"v")
listed = anonymous.list_objects(Bucket="bob-public")["Contents"]
check([o["Key"] for o in listed] == ["k"], "a bucket created public-read")
check(listed[0]["Owner"] == {"ID": bob_id}, f"no user names for anyone: {listed[0]['Owner']}")
expect_error("InvalidBucketAclWithObjectOwnership", bob.create_bucket, Bucket="bob-bad", ACL="public-read",
             ObjectOwnership="BucketOwnerEnforced")
expect_error("404", bob.head_bucket, Bucket="bob-bad")
bob.create_bucket(Bucket="bob-enforced", ObjectOwnership="BucketOwnerEnforced")
got = bob.get_bucket_ownership_controls(Bucket="bob-enforced")["OwnershipControls"]
check(got == enforced, f"created with BucketOwnerEnforced: {got}")

# Clean up, so that the users can be deleted after.
for bucket in [B, "bob-public", "bob-enforced"]:
    owner = alice if bucket == B else bob
    for o in owner.list_objects_v2(Bucket=bucket).get("Contents", []):
        owner.delete_object(Bucket=bucket, Key=o["Key"])
    owner.delete_bucket(Bucket=bucket)
print("acls: all checks passed")
