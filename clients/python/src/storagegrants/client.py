"""`GrantsClient`: the generated `GrantServiceStub` with what every call needs.

One method per RPC of the service: `grant_read`, `grant_write`, `assume_scoped`, and
the multipart upload of one large object, `start_multipart_upload`,
`grant_upload_parts`, `list_uploaded_parts`, `complete_multipart_upload`,
`abort_multipart_upload`.

Each call sends the caller's bearer token (`authorization: Bearer …`, unless the
identity is an mTLS client certificate), has a deadline, and accepts request fields as
keyword arguments, with `datetime.timedelta` for TTLs and durations. Extra gRPC
metadata goes in `call_metadata` (`metadata` is a field of GrantWriteRequest and
StartMultipartUploadRequest):

    with GrantsClient.connect("127.0.0.1:50051", token=token) as client:
        grant = client.grant_read(bucket="demo", key="public/hello.txt", ttl=timedelta(minutes=2))

Failed calls raise `grpc.RpcError`; `storagegrants.errors` reads their details.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import grpc
from google.protobuf import duration_pb2

from storagegrants.v1 import grants_pb2, grants_pb2_grpc

#: A bearer token, or a function returning the current one (for example re-reading a
#: Kubernetes projected service-account token, which the kubelet rotates), called per call.
TokenSource = Union[str, Callable[[], str]]
Metadata = Sequence[Tuple[str, str]]

#: Default deadline of a call: a grant is local work plus, at most, one STS call.
DEFAULT_TIMEOUT_S = 10.0


def duration(value: Union[timedelta, duration_pb2.Duration, int, float]) -> duration_pb2.Duration:
    """A `google.protobuf.Duration` from a `timedelta` or a number of seconds."""
    if isinstance(value, duration_pb2.Duration):
        return value
    if not isinstance(value, timedelta):
        value = timedelta(seconds=value)
    result = duration_pb2.Duration()
    result.FromTimedelta(value)
    return result


def _with_durations(fields: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        if fields.get(name) is not None:
            fields[name] = duration(fields[name])
    return fields


class GrantsClient:
    """A `storagegrants.v1.GrantService` client.

    `stub` is the generated stub and `channel` the gRPC channel, for anything the
    helpers do not cover. A client is a context manager that closes its channel.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        token: Optional[TokenSource] = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.channel = channel
        self.stub = grants_pb2_grpc.GrantServiceStub(channel)
        self._token = token
        self._timeout = timeout

    @classmethod
    def connect(
        cls,
        target: str,
        token: Optional[TokenSource] = None,
        *,
        credentials: Optional[grpc.ChannelCredentials] = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> "GrantsClient":
        """Opens a channel to `target` (`host:port`): TLS with `credentials`
        (`grpc.ssl_channel_credentials(...)`, with a client certificate for mTLS),
        plaintext without (loopback, or a mesh that adds mTLS)."""
        if credentials is None:
            channel = grpc.insecure_channel(target)
        else:
            channel = grpc.secure_channel(target, credentials)
        return cls(channel, token=token, timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "GrantsClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request_metadata(self, extra: Metadata = ()) -> list[tuple[str, str]]:
        """The call metadata: the bearer token (when the client has one), then `extra`."""
        metadata = []
        if self._token is not None:
            token = self._token() if callable(self._token) else self._token
            # A token read from a file usually ends in a newline, which gRPC refuses in
            # a header value.
            metadata.append(("authorization", f"Bearer {token.strip()}"))
        metadata.extend(extra)
        return metadata

    def _call(self, rpc: Callable[..., Any], request: Any, timeout: Optional[float], call_metadata: Metadata) -> Any:
        """One call of `rpc` with the client's deadline (unless `timeout`) and metadata."""
        deadline = self._timeout if timeout is None else timeout
        return rpc(request, timeout=deadline, metadata=self.request_metadata(call_metadata))

    def grant_read(
        self,
        request: Optional[grants_pb2.GrantReadRequest] = None,
        *,
        timeout: Optional[float] = None,
        call_metadata: Metadata = (),
        **fields: Any,
    ) -> grants_pb2.GrantReadResponse:
        """A presigned GET URL for one object. Fields as in `GrantReadRequest`;
        `ttl` may be a `timedelta`."""
        if request is None:
            request = grants_pb2.GrantReadRequest(**_with_durations(fields, "ttl"))
        return self._call(self.stub.GrantRead, request, timeout, call_metadata)

    def grant_write(
        self,
        request: Optional[grants_pb2.GrantWriteRequest] = None,
        *,
        timeout: Optional[float] = None,
        call_metadata: Metadata = (),
        **fields: Any,
    ) -> grants_pb2.GrantWriteResponse:
        """A presigned upload for one object: a PUT, or a POST form when
        `content_length_range` is set (a `SizeRange` or a `(min, max)` tuple). Fields
        as in `GrantWriteRequest`; `ttl` may be a `timedelta`."""
        if request is None:
            # One of the two, as the proto's oneof: setting both keeps the last silently.
            if fields.get("content_length") is not None and fields.get("content_length_range") is not None:
                raise ValueError(
                    "content_length and content_length_range are exclusive: pin an exact length "
                    "(a PUT) or a range (a POST form), not both"
                )
            size_range = fields.get("content_length_range")
            if isinstance(size_range, tuple):
                low, high = size_range
                fields["content_length_range"] = grants_pb2.SizeRange(min_bytes=low, max_bytes=high)
            request = grants_pb2.GrantWriteRequest(**_with_durations(fields, "ttl"))
        return self._call(self.stub.GrantWrite, request, timeout, call_metadata)

    def assume_scoped(
        self,
        request: Optional[grants_pb2.AssumeScopedRequest] = None,
        *,
        timeout: Optional[float] = None,
        call_metadata: Metadata = (),
        **fields: Any,
    ) -> grants_pb2.AssumeScopedResponse:
        """Temporary credentials limited to one bucket prefix. Fields as in
        `AssumeScopedRequest` (`access=grants_pb2.ACCESS_READ_WRITE`); `duration` and
        `min_remaining` may be `timedelta`s. The credentials expire (`expires_at`);
        `storagegrants.s3.scoped_s3_client` makes a boto3 client whose credentials call
        this again before they do, `storagegrants.s3.s3_client` one from this answer alone."""
        if request is None:
            request = grants_pb2.AssumeScopedRequest(**_with_durations(fields, "duration", "min_remaining"))
        return self._call(self.stub.AssumeScoped, request, timeout, call_metadata)

    # -- multipart upload ---------------------------------------------------------------

    def start_multipart_upload(
        self,
        request: Optional[grants_pb2.StartMultipartUploadRequest] = None,
        *,
        timeout: Optional[float] = None,
        call_metadata: Metadata = (),
        **fields: Any,
    ) -> grants_pb2.StartMultipartUploadResponse:
        """Starts a multipart upload of one object. Fields as in
        `StartMultipartUploadRequest` (`bucket`, `key`, and the pins the object gets:
        `content_type`, `metadata`, `checksum_algorithm=grants_pb2.CHECKSUM_ALGORITHM_SHA256`,
        `create_only`, `expected_size`); `ttl` may be a `timedelta`. The caller's rules
        must allow `write` on the key.

        The answer's `upload` is the token every later step takes; only the same caller
        may use it. Keep it with the upload, and abort the upload if it is given up."""
        if request is None:
            request = grants_pb2.StartMultipartUploadRequest(**_with_durations(fields, "ttl"))
        return self._call(self.stub.StartMultipartUpload, request, timeout, call_metadata)

    def grant_upload_parts(
        self,
        request: Optional[grants_pb2.GrantUploadPartsRequest] = None,
        *,
        timeout: Optional[float] = None,
        call_metadata: Metadata = (),
        **fields: Any,
    ) -> grants_pb2.GrantUploadPartsResponse:
        """One presigned PUT per asked part of an upload (at most 1,000 a call). Fields as
        in `GrantUploadPartsRequest`: `upload` (the token), and either `parts`
        (`UploadPartRequest`s or dicts, with optional `content_length` and
        `checksum_sha256` pins) or `part_range` (a `PartRange` or a `(first, last)`
        tuple, inclusive); `ttl` may be a `timedelta`.

        Each answered part uploads with `storagegrants.upload(part, body)`, whose
        `.etag` completes the upload. Every part but the last must be at least 5 MiB."""
        if request is None:
            part_range = fields.get("part_range")
            if isinstance(part_range, tuple):
                first, last = part_range
                fields["part_range"] = grants_pb2.PartRange(first=first, last=last)
            request = grants_pb2.GrantUploadPartsRequest(**_with_durations(fields, "ttl"))
        return self._call(self.stub.GrantUploadParts, request, timeout, call_metadata)

    def list_uploaded_parts(
        self,
        request: Optional[grants_pb2.ListUploadedPartsRequest] = None,
        *,
        timeout: Optional[float] = None,
        call_metadata: Metadata = (),
        **fields: Any,
    ) -> grants_pb2.ListUploadedPartsResponse:
        """The parts the store holds for an upload (`upload=token`), in part-number order,
        for resuming. Some S3-compatible stores list parts without their ETags: keep the
        ETag each part upload answered."""
        if request is None:
            request = grants_pb2.ListUploadedPartsRequest(**fields)
        return self._call(self.stub.ListUploadedParts, request, timeout, call_metadata)

    def complete_multipart_upload(
        self,
        request: Optional[grants_pb2.CompleteMultipartUploadRequest] = None,
        *,
        timeout: Optional[float] = None,
        call_metadata: Metadata = (),
        **fields: Any,
    ) -> grants_pb2.CompleteMultipartUploadResponse:
        """Assembles the object. Fields as in `CompleteMultipartUploadRequest`: `upload`
        (the token) and `parts`, every part once in ascending part-number order, as
        `CompletedPart`s or dicts with `part_number` and the `etag` its upload answered
        (and `checksum_sha256` when the upload pins checksums).

        FAILED_PRECONDITION names what to change (a part not uploaded, another ETag, a
        part under 5 MiB that is not the last, a size off the limits, an upload that no
        longer exists); ALREADY_EXISTS means a `create_only` upload met an existing object."""
        if request is None:
            request = grants_pb2.CompleteMultipartUploadRequest(**fields)
        return self._call(self.stub.CompleteMultipartUpload, request, timeout, call_metadata)

    def abort_multipart_upload(
        self,
        request: Optional[grants_pb2.AbortMultipartUploadRequest] = None,
        *,
        timeout: Optional[float] = None,
        call_metadata: Metadata = (),
        **fields: Any,
    ) -> grants_pb2.AbortMultipartUploadResponse:
        """Discards an upload (`upload=token`) and the parts it holds. Aborting an upload
        that no longer exists (completed or already aborted) succeeds."""
        if request is None:
            request = grants_pb2.AbortMultipartUploadRequest(**fields)
        return self._call(self.stub.AbortMultipartUpload, request, timeout, call_metadata)
