"""`GrantsClient`: the generated `GrantServiceStub` with what every call needs.

Each call sends the caller's bearer token (`authorization: Bearer …`, unless the
identity is an mTLS client certificate), has a deadline, and accepts request fields as
keyword arguments, with `datetime.timedelta` for TTLs. Extra gRPC metadata goes in
`call_metadata` (`metadata` is a field of GrantWriteRequest):

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
            metadata.append(("authorization", f"Bearer {token}"))
        metadata.extend(extra)
        return metadata

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
        return self.stub.GrantRead(request, timeout=timeout or self._timeout, metadata=self.request_metadata(call_metadata))

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
            size_range = fields.get("content_length_range")
            if isinstance(size_range, tuple):
                low, high = size_range
                fields["content_length_range"] = grants_pb2.SizeRange(min_bytes=low, max_bytes=high)
            request = grants_pb2.GrantWriteRequest(**_with_durations(fields, "ttl"))
        return self.stub.GrantWrite(request, timeout=timeout or self._timeout, metadata=self.request_metadata(call_metadata))

    def assume_scoped(
        self,
        request: Optional[grants_pb2.AssumeScopedRequest] = None,
        *,
        timeout: Optional[float] = None,
        call_metadata: Metadata = (),
        **fields: Any,
    ) -> grants_pb2.AssumeScopedResponse:
        """Temporary credentials limited to one bucket prefix. Fields as in
        `AssumeScopedRequest` (`access=grants_pb2.ACCESS_READ_WRITE`); `duration` may
        be a `timedelta`. `storagegrants.s3.s3_client` turns the answer into a boto3 client."""
        if request is None:
            request = grants_pb2.AssumeScopedRequest(**_with_durations(fields, "duration"))
        return self.stub.AssumeScoped(request, timeout=timeout or self._timeout, metadata=self.request_metadata(call_metadata))
