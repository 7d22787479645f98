"""AssumeScoped, then use the credentials with boto3: an S3 client configured from the
answer alone, limited to one prefix, whose credentials refresh themselves (it calls
AssumeScoped again before they expire, so keep the GrantsClient open while using it).

With ./scripts/run-local.sh running:
    .venv/bin/python clients/python/examples/assume_scoped.py
"""

import os
from datetime import timedelta

from storagegrants import GrantsClient
from storagegrants.s3 import scoped_s3_client
from storagegrants.v1 import grants_pb2

with GrantsClient.connect(
    os.environ.get("SG_TARGET", "127.0.0.1:50051"),
    token=os.environ.get("SG_TOKEN", "dev-local-token-0123456789"),
) as client:
    s3 = scoped_s3_client(
        client,
        bucket="demo",
        prefix="public/",
        access=grants_pb2.ACCESS_READ_WRITE,
        list=True,
        duration=timedelta(minutes=15),
        # Less than the session (15 minutes here): each refresh gets credentials with at
        # least 10 minutes left. With sessions over 20 minutes, keep the default (20).
        min_remaining=timedelta(minutes=10),
    )
    s3.put_object(Bucket="demo", Key="public/from-python.txt", Body=b"hello")
    for item in s3.list_objects_v2(Bucket="demo", Prefix="public/").get("Contents", []):
        print(item["Key"])
