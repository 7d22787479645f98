"""Python client for the storage-grants gRPC API (`storagegrants.v1.GrantService`).

- `storagegrants.v1`: the messages (`grants_pb2`, typed by .pyi files) and the stub
  (`grants_pb2_grpc`), generated from the service's proto when the package is built;
- `storagegrants.client`: `GrantsClient`, one method per RPC (GrantRead, GrantWrite,
  AssumeScoped and the five multipart upload steps) with the caller's bearer token, a
  default deadline and `timedelta` TTLs;
- `storagegrants.http`: `download` and `upload`, using a grant (or a multipart part
  grant) with urllib;
- `storagegrants.errors`: the `google.rpc.BadRequest` field violations and retry hint
  of a failed call;
- `storagegrants.s3` (needs the `s3` extra, boto3): boto3 S3 clients from
  AssumeScoped, `scoped_s3_client` with credentials that call AssumeScoped again
  before they expire, `s3_client` with an answer's fixed ones. Imported on first use
  of `storagegrants.s3`, so that `import storagegrants` works without boto3.

Presigned URLs and temporary credentials are bearer credentials: nothing in this
package logs one or puts one into an exception message.
"""

import importlib
from typing import TYPE_CHECKING, Any

from storagegrants.client import GrantsClient, duration
from storagegrants.errors import FieldViolation, field_violations, retry_delay, rich_status
from storagegrants.http import GrantedRequestError, HttpResponse, UploadGrant, download, send, upload

if TYPE_CHECKING:
    from storagegrants import s3 as s3

__all__ = [
    "FieldViolation",
    "GrantedRequestError",
    "GrantsClient",
    "HttpResponse",
    "UploadGrant",
    "download",
    "duration",
    "field_violations",
    "retry_delay",
    "rich_status",
    "send",
    "upload",
]


def __getattr__(name: str) -> Any:
    # `storagegrants.s3` imports boto3, an optional extra: it is imported when first
    # used (`storagegrants.s3.s3_client(...)` after a plain `import storagegrants`),
    # not by `import storagegrants` itself.
    if name == "s3":
        try:
            return importlib.import_module("storagegrants.s3")
        except ModuleNotFoundError as err:
            if err.name not in ("boto3", "botocore"):
                raise
            raise ModuleNotFoundError(
                "storagegrants.s3 needs boto3: pip install 'storage-grants-client[s3]'", name=err.name
            ) from err
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
