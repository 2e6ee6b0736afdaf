"""boto3 as three users of one running shardgate: the configured key (the
administrator) and two users an admin created (alice, bob). Each user owns
the buckets it creates: another user's bucket is AccessDenied for every
operation (reads, writes, listings, copies from it, deletes, its
configuration), its name is BucketAlreadyExists, ListBuckets lists a
user's own; the administrator may use every bucket. A wrong secret is
SignatureDoesNotMatch. Run by tests/admin.rs; exits non-zero on the first
failed check.

  users.py ALICE_KEY ALICE_SECRET BOB_KEY BOB_SECRET setup|check"""

import sys

from gateway_client import as_user, check, client, error_code, expect_error

alice_key, alice_secret, bob_key, bob_secret, phase = sys.argv[1:6]

admin = client()
alice = as_user(alice_key, alice_secret)
bob = as_user(bob_key, bob_secret)


def names(c):
    return sorted(b["Name"] for b in c.list_buckets()["Buckets"])


if phase == "setup":
    admin.create_bucket(Bucket="admins")
    alice.create_bucket(Bucket="alice-b")
    alice.put_object(Bucket="alice-b", Key="secret.txt", Body=b"alice's")
    bob.create_bucket(Bucket="bob-b")
    expect_error("BucketAlreadyExists", bob.create_bucket, Bucket="alice-b")
    expect_error("BucketAlreadyExists", alice.create_bucket, Bucket="admins")
    expect_error("BucketAlreadyOwnedByYou", alice.create_bucket, Bucket="alice-b")
    print("users: setup done")
    sys.exit(0)

# Each user sees its own; the administrator sees all.
check(names(alice) == ["alice-b"], f"alice lists her own: {names(alice)}")
check(names(bob) == ["bob-b"], f"bob lists his own: {names(bob)}")
check(names(admin) == ["admins", "alice-b", "bob-b"], f"the administrator lists all: {names(admin)}")
check(alice.list_buckets()["Owner"]["DisplayName"] == "alice", "ListBuckets names the user")

# Alice uses hers.
check(alice.get_object(Bucket="alice-b", Key="secret.txt")["Body"].read() == b"alice's", "alice reads hers")

# Bob may do nothing with alice's bucket, nor alice with the administrator's.
denied = [
    (bob.get_object, dict(Bucket="alice-b", Key="secret.txt")),
    (bob.put_object, dict(Bucket="alice-b", Key="mine", Body=b"x")),
    (bob.delete_object, dict(Bucket="alice-b", Key="secret.txt")),
    (bob.list_objects_v2, dict(Bucket="alice-b")),
    (bob.list_object_versions, dict(Bucket="alice-b")),
    (bob.create_multipart_upload, dict(Bucket="alice-b", Key="mp")),
    (bob.delete_bucket, dict(Bucket="alice-b")),
    (bob.put_bucket_versioning, dict(Bucket="alice-b", VersioningConfiguration={"Status": "Enabled"})),
    (bob.get_bucket_tagging, dict(Bucket="alice-b")),
    (bob.put_bucket_cors, dict(Bucket="alice-b", CORSConfiguration={
        "CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]})),
    (bob.copy_object, dict(Bucket="bob-b", Key="stolen", CopySource={"Bucket": "alice-b", "Key": "secret.txt"})),
    (alice.get_bucket_location, dict(Bucket="admins")),
    (alice.put_object, dict(Bucket="admins", Key="k", Body=b"x")),
]
for fn, kwargs in denied:
    code = expect_error("AccessDenied", fn, **kwargs)
    check(code == 403, f"{fn.__name__} {kwargs}: 403")
# HEAD answers have no body: the status alone.
check(error_code(bob.head_object, Bucket="alice-b", Key="secret.txt")[1] == 403, "HEAD: 403")
upload = bob.create_multipart_upload(Bucket="bob-b", Key="mp")["UploadId"]
expect_error("AccessDenied", bob.upload_part_copy, Bucket="bob-b", Key="mp", UploadId=upload, PartNumber=1,
             CopySource={"Bucket": "alice-b", "Key": "secret.txt"})
bob.abort_multipart_upload(Bucket="bob-b", Key="mp", UploadId=upload)
expect_error("NoSuchKey", bob.get_object, Bucket="bob-b", Key="stolen")
check(alice.get_object(Bucket="alice-b", Key="secret.txt")["Body"].read() == b"alice's",
      "alice's object is untouched")

# The administrator may use every bucket.
check(admin.get_object(Bucket="alice-b", Key="secret.txt")["Body"].read() == b"alice's", "the admin reads alice's")

# A wrong secret, an unknown key.
expect_error("SignatureDoesNotMatch", as_user(alice_key, bob_secret).list_buckets)
expect_error("InvalidAccessKeyId", as_user("SGNOSUCHKEY000000000", "x" * 40).list_buckets)
print("users: all checks passed")
