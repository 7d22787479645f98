"""What a failed call says, as data: the rich status (`grpc-status-details-bin`), the
field violations of an INVALID_ARGUMENT (`google.rpc.BadRequest`) and the retry hint
of an UNAVAILABLE or RESOURCE_EXHAUSTED (`google.rpc.RetryInfo`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its proto name (`key`, `ttl`, …) and what to send instead."""

    field: str
    description: str


def rich_status(error: grpc.RpcError) -> Optional[status_pb2.Status]:
    """The `google.rpc.Status` a failed call carries, or None when it has no details."""
    return rpc_status.from_call(error)  # type: ignore[arg-type]


def field_violations(error: grpc.RpcError) -> list[FieldViolation]:
    """The field violations of every `google.rpc.BadRequest` the error carries; empty
    when there are none. INVALID_ARGUMENT errors of this service always carry one."""
    status = rich_status(error)
    violations: list[FieldViolation] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
    return violations


def retry_delay(error: grpc.RpcError) -> Optional[timedelta]:
    """How long the service asks the caller to wait before retrying, or None."""
    status = rich_status(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta()
    return None
