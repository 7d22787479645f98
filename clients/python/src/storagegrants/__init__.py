"""Python client for the storage-grants gRPC API (`storagegrants.v1.GrantService`).

- `storagegrants.v1`: the messages (`grants_pb2`, typed by .pyi files) and the stub
  (`grants_pb2_grpc`), generated from the service's proto when the package is built;
- `storagegrants.client`: `GrantsClient`, the stub with the caller's bearer token, a
  default deadline and `timedelta` TTLs;
- `storagegrants.http`: `download` and `upload`, using a grant with urllib;
- `storagegrants.errors`: the `google.rpc.BadRequest` field violations and retry hint
  of a failed call;
- `storagegrants.s3` (needs the `s3` extra, boto3): a boto3 S3 client from an
  AssumeScoped answer.

Presigned URLs and temporary credentials are bearer credentials: nothing in this
package logs one or puts one into an exception message.
"""

from storagegrants.client import GrantsClient, duration
from storagegrants.errors import FieldViolation, field_violations, retry_delay, rich_status
from storagegrants.http import GrantedRequestError, HttpResponse, download, send, upload

__all__ = [
    "FieldViolation",
    "GrantedRequestError",
    "GrantsClient",
    "HttpResponse",
    "download",
    "duration",
    "field_violations",
    "retry_delay",
    "rich_status",
    "send",
    "upload",
]
