"""Using a grant over plain HTTP with urllib: `download` with a GrantRead answer,
`upload` with a GrantWrite answer (a PUT with its pinned headers, or a multipart POST
form as a browser would send it) or with one part of a GrantUploadParts answer (a PUT,
whose answer's `etag` completes the multipart upload).

A presigned URL is a bearer credential: no exception raised here carries one. A
refused request reports its HTTP status and the store's error code only.
"""

from __future__ import annotations

import re
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

from storagegrants.v1 import grants_pb2

#: Default timeout of one HTTP request with a grant, in seconds.
DEFAULT_HTTP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class HttpResponse:
    """What the store answered: status, headers (lowercase names) and body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def s3_code(self) -> Optional[str]:
        """The `<Code>` of an S3 XML error body, when it has one."""
        return s3_error_code(self.body)

    @property
    def etag(self) -> Optional[str]:
        """The `ETag` the store answered, without its quotes: what
        CompleteMultipartUpload takes for an uploaded part. None when there is none."""
        value = self.headers.get("etag", "").strip().strip('"')
        return value or None


class GrantedRequestError(Exception):
    """A request made with a grant that the store answered with a non-2xx status
    (403: a signature or pin did not match; 412: create-only met an existing object;
    404: no such object)."""

    def __init__(self, what: str, response: HttpResponse) -> None:
        self.what = what
        self.response = response
        self.status = response.status
        self.s3_code = response.s3_code
        super().__init__(f"{what} with the granted URL failed: HTTP {self.status} ({self.s3_code or 'no S3 error code'})")


def s3_error_code(body: bytes) -> Optional[str]:
    """The `<Code>` of an S3 XML error body: the only part of it worth reporting."""
    match = re.search(rb"<Code>([^<]{1,64})</Code>", body)
    return match.group(1).decode("ascii", "replace") if match else None


def send(
    method: str,
    url: str,
    headers: Optional[Mapping[str, str]] = None,
    body: Optional[bytes] = None,
    timeout: float = DEFAULT_HTTP_TIMEOUT_S,
) -> HttpResponse:
    """Sends one request to a granted URL and returns the answer, whatever its status.
    A failure to connect raises `ConnectionError` naming the kind of failure only."""
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResponse(response.status, _lower(response.headers.items()), response.read())
    except urllib.error.HTTPError as err:
        with err:
            return HttpResponse(err.code, _lower(err.headers.items()), err.read())
    except urllib.error.URLError as err:
        # `from None`: the chained error may carry the request, and so the URL.
        raise ConnectionError(f"{method} with the granted URL failed: {type(err.reason).__name__}") from None


def _lower(items: object) -> dict[str, str]:
    return {k.lower(): v for k, v in items}  # type: ignore[attr-defined]


def _ok(what: str, response: HttpResponse) -> HttpResponse:
    if not 200 <= response.status < 300:
        raise GrantedRequestError(what, response)
    return response


def download(grant: grants_pb2.GrantReadResponse, timeout: float = DEFAULT_HTTP_TIMEOUT_S) -> HttpResponse:
    """GETs the object of a GrantRead answer, with the headers it names. Raises
    `GrantedRequestError` unless the store answers 2xx."""
    return _ok("GET download", send(grant.method or "GET", grant.url, dict(grant.headers), timeout=timeout))


#: What `upload` takes: a GrantWrite answer, or one part of a GrantUploadParts answer.
UploadGrant = Union[grants_pb2.GrantWriteResponse, grants_pb2.UploadPartGrant]


def put_headers(grant: UploadGrant, body: bytes) -> dict[str, str]:
    """The headers to PUT `body` with: exactly the granted ones. urllib sets
    Content-Length from the body itself, so a pinned one is checked, not sent twice.
    Raises `ValueError` when the body is not the pinned size."""
    headers = dict(grant.headers)
    pinned_length = headers.pop("content-length", None)
    if pinned_length is not None and pinned_length != str(len(body)):
        raise ValueError(f"the grant pins Content-Length {pinned_length}, the body has {len(body)} bytes")
    return headers


def multipart_form(fields: Mapping[str, str], file_field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body as a browser sends it: `fields` in order, then the
    file last, as S3 requires. Returns (body, Content-Type header)."""
    boundary = f"----storage-grants-py-{secrets.token_hex(12)}"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload(
    grant: UploadGrant,
    body: Union[bytes, bytearray],
    filename: Optional[str] = None,
    timeout: float = DEFAULT_HTTP_TIMEOUT_S,
) -> HttpResponse:
    """Uploads `body` with a GrantWrite answer or one part of a GrantUploadParts answer:
    a PUT with exactly the granted headers, or a POST form with every granted field and
    the file last (`filename` defaults to the key's last segment). A part's answer
    carries the `etag` to complete the upload with. Raises `GrantedRequestError` unless
    the store answers 2xx, and `ValueError` when the body is not the pinned size."""
    body = bytes(body)
    if grant.method == "PUT":
        what = "PUT part upload" if isinstance(grant, grants_pb2.UploadPartGrant) else "PUT upload"
        return _ok(what, send("PUT", grant.url, put_headers(grant, body), body, timeout))
    if isinstance(grant, grants_pb2.GrantWriteResponse) and grant.method == "POST":
        if not grant.file_field:
            raise ValueError("a POST grant without a file field")
        if filename is None:
            key = next((v for k, v in grant.form_fields.items() if k.lower() == "key"), "")
            filename = key.rsplit("/", 1)[-1] or "upload"
        form, content_type = multipart_form(dict(grant.form_fields), grant.file_field, filename, body)
        return _ok("POST form upload", send("POST", grant.url, {"Content-Type": content_type}, form, timeout))
    raise ValueError(f"unknown upload method {grant.method!r}")
