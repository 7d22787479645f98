"""AssumeScoped, then use the credentials with boto3: an S3 client configured from the
answer alone, limited to one prefix.

With ./scripts/run-local.sh running:
    .venv/bin/python clients/python/examples/assume_scoped.py
"""

import os
from datetime import timedelta

from storagegrants import GrantsClient
from storagegrants.s3 import s3_client
from storagegrants.v1 import grants_pb2

with GrantsClient.connect(
    os.environ.get("SG_TARGET", "127.0.0.1:50051"),
    token=os.environ.get("SG_TOKEN", "dev-local-token-0123456789"),
) as client:
    scoped = client.assume_scoped(
        bucket="demo",
        prefix="public/",
        access=grants_pb2.ACCESS_READ_WRITE,
        list=True,
        duration=timedelta(minutes=15),
    )
s3 = s3_client(scoped)
s3.put_object(Bucket=scoped.bucket, Key=f"{scoped.prefix}from-python.txt", Body=b"hello")
for item in s3.list_objects_v2(Bucket=scoped.bucket, Prefix=scoped.prefix).get("Contents", []):
    print(item["Key"])
