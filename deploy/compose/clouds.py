"""Creates the compose deployment's S3 bucket (on moto) and Azure container
(on Azurite), retrying while they start. Run once by the `clouds` service."""

import time

import boto3
from azure.storage.blob import BlobServiceClient

AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://azurite:10000/devstoreaccount1;"
)

for attempt in range(60):
    try:
        s3 = boto3.client("s3", endpoint_url="http://moto:5000", region_name="us-east-1",
                          aws_access_key_id="compose", aws_secret_access_key="not-checked-by-moto")
        if "shardgate" not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
            s3.create_bucket(Bucket="shardgate")
        blobs = BlobServiceClient.from_connection_string(AZURITE)
        if not blobs.get_container_client("shardgate").exists():
            blobs.create_container("shardgate")
        print("clouds: bucket and container ready")
        break
    except Exception as e:  # the emulators are still starting
        print(f"clouds: waiting ({e.__class__.__name__})")
        time.sleep(2)
else:
    raise SystemExit("clouds: moto or Azurite never answered")
