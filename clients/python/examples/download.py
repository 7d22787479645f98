"""GrantRead, then download the object with plain urllib.

With ./scripts/run-local.sh running:
    .venv/bin/python clients/python/examples/download.py [bucket] [key]
SG_TARGET (default 127.0.0.1:50051) and SG_TOKEN (default: the local development
token) say where the service is and who is calling.
"""

import os
import sys
from datetime import timedelta

from storagegrants import GrantsClient, download

bucket = sys.argv[1] if len(sys.argv) > 1 else "demo"
key = sys.argv[2] if len(sys.argv) > 2 else "public/hello.txt"
with GrantsClient.connect(
    os.environ.get("SG_TARGET", "127.0.0.1:50051"),
    token=os.environ.get("SG_TOKEN", "dev-local-token-0123456789"),
) as client:
    grant = client.grant_read(bucket=bucket, key=key, ttl=timedelta(minutes=2))
    # The URL is a bearer credential: hand it to whoever needs the object, never log it.
    print(f"granted {grant.grant_id}, valid until {grant.expires_at.ToDatetime().isoformat()}Z")
    print(download(grant).body.decode())
