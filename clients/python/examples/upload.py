"""GrantWrite with every pin of a presigned PUT, then upload with urllib; then a POST
form grant (size range), as a browser would use it.

With ./scripts/run-local.sh running:
    .venv/bin/python clients/python/examples/upload.py
"""

import base64
import hashlib
import os
import sys
import time

import grpc

from storagegrants import GrantedRequestError, GrantsClient, field_violations, upload

body = b"id,amount\n1,42\n"
with GrantsClient.connect(
    os.environ.get("SG_TARGET", "127.0.0.1:50051"),
    token=os.environ.get("SG_TOKEN", "dev-local-token-0123456789"),
) as client:
    try:
        put = client.grant_write(
            bucket="demo",
            key=f"public/report-{time.time_ns()}.csv",
            ttl=300,
            content_type="text/csv",
            content_length=len(body),
            checksum_sha256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
            metadata={"owner": "team-a"},
            create_only=True,
        )
        # Sends exactly the pinned headers; the store refuses any other value.
        print(f"PUT upload: HTTP {upload(put, body).status}")

        form = client.grant_write(
            bucket="demo",
            key=f"public/avatar-{time.time_ns()}.png",
            content_type="image/png",
            content_length_range=(1, 1024 * 1024),
        )
        # In a browser: send form.form_fields, then the file as form.file_field.
        print(f"POST form: {len(form.form_fields)} fields, file field {form.file_field!r}")
    except GrantedRequestError as err:
        sys.exit(f"the store refused the upload: HTTP {err.status} {err.s3_code or ''}")
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
            for violation in field_violations(err):
                print(f"{violation.field}: {violation.description}", file=sys.stderr)
            sys.exit(1)
        raise
