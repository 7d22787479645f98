"""boto3 S3 clients from AssumeScoped: configured from the answer alone, with
credentials that refresh themselves or with the answer's fixed ones.

Needs boto3: `pip install 'storage-grants-client[s3]'`.

AssumeScoped credentials expire (`credentials.expires_at`: 15 minutes to 1 hour after
they were made, often less when the service hands out cached ones). A client that runs
longer than that needs new ones:

- `scoped_s3_client(client, bucket=, prefix=, access=, ...)` asks AssumeScoped itself
  and gives boto3 credentials that call AssumeScoped again before they expire
  (botocore's `RefreshableCredentials`), asking for `min_remaining` of life left so
  that a refresh never gets back the credentials it replaces;
- `scoped_credentials(client, ...)` is those credentials alone, for other clients;
- `s3_client(answer)` uses the answer's credentials as they are: they stop working at
  `expires_at` and are never renewed (botocore signs with them anyway; the store then
  answers `ExpiredToken`). For short jobs, or with `credentials=scoped_credentials(...)`.

While the service cannot answer, refreshing credentials cost each S3 call little: a
refresh made while the current credentials may still be kept (botocore's advisory
window) has a short deadline (`EARLY_REFRESH_TIMEOUT`), and after it fails the
credentials go on with the current ones, without asking, for `FAILURE_BACKOFF` (or the
service's `RetryInfo` delay). In the mandatory window a refresh has the client's full
deadline and its failure is raised, as before.
"""

from __future__ import annotations

import inspect
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Optional

import boto3
import botocore.config
import botocore.credentials
import botocore.session
import grpc

from storagegrants.client import duration
from storagegrants.errors import retry_delay
from storagegrants.v1 import grants_pb2

if TYPE_CHECKING:
    from storagegrants.client import GrantsClient

#: Least life the credentials of a refresh must have left: botocore fetches again 15
#: minutes before expiry (its advisory window; 10 minutes, mandatory), so it asks for
#: more than that, as the service's SDK credential endpoints do. Needs sessions longer
#: than this (the rule's `max_ttl`, the role's maximum): for shorter ones ask less.
DEFAULT_MIN_REMAINING = timedelta(minutes=20)

#: The refresh windows (`botocore.credentials`): advisory, botocore's 15 minutes (the
#: call that notices fetches, others go on; a failure keeps the old credentials), then
#: mandatory (every call waits for the fetch; a failure is raised): the last minute,
#: not botocore's 10, as in the Node package: credentials that still work for minutes
#: are used while the service cannot answer, rather than failing every S3 call.
BOTOCORE_ADVISORY_REFRESH = timedelta(minutes=15)
BOTOCORE_MANDATORY_REFRESH = timedelta(minutes=1)

#: Deadline of a refresh made while the current credentials may still be kept (botocore's
#: advisory window, before the mandatory one): a service that hangs costs the S3 call
#: that noticed this long, not the client's whole deadline. The client's own deadline
#: when that is shorter; in the mandatory window, the client's deadline.
EARLY_REFRESH_TIMEOUT = timedelta(seconds=2.5)

#: After a failed refresh in the advisory window, how long the credentials go on with
#: the current ones without calling AssumeScoped again (unless the error carries a
#: `RetryInfo` delay, which is used instead, between 1 second and 5 minutes). Never
#: past the mandatory window, where every S3 call asks again and a failure is raised.
FAILURE_BACKOFF = timedelta(seconds=20)
_RETRY_DELAY_BOUNDS = (timedelta(seconds=1), timedelta(minutes=5))

#: `method` of the credentials, as botocore names a credential source.
CREDENTIAL_METHOD = "storage-grants-assume-scoped"


def refresh_windows(min_remaining: timedelta) -> tuple[timedelta, timedelta]:
    """The (advisory, mandatory) refresh windows for credentials asked with
    `min_remaining`: 15 minutes and 1 minute, shortened to 3/4 and 1/2 of
    `min_remaining` when it is shorter than 20 minutes, so that fresh credentials
    always lie outside the windows and are fetched about once per lifetime, not before
    every call."""
    if min_remaining <= timedelta(0):
        raise ValueError("min_remaining must be positive")
    return (
        min(BOTOCORE_ADVISORY_REFRESH, min_remaining * 3 / 4),
        min(BOTOCORE_MANDATORY_REFRESH, min_remaining / 2),
    )


def _check_secrets(response: grants_pb2.AssumeScopedResponse) -> grants_pb2.TemporaryCredentials:
    """The answer's credentials, all three secrets present (`ValueError` otherwise)."""
    credentials = response.credentials
    if not (credentials.access_key_id and credentials.secret_access_key and credentials.session_token):
        raise ValueError("the AssumeScoped answer carries no complete credentials")
    return credentials


def _check_complete(response: grants_pb2.AssumeScopedResponse) -> grants_pb2.TemporaryCredentials:
    credentials = _check_secrets(response)
    if not credentials.HasField("expires_at"):
        raise ValueError("the AssumeScoped answer carries no expires_at")
    return credentials


def _metadata(response: grants_pb2.AssumeScopedResponse) -> dict[str, Any]:
    """What botocore's refreshable credentials take (`expiry_time` ISO 8601, UTC)."""
    credentials = _check_complete(response)
    metadata = {
        "access_key": credentials.access_key_id,
        "secret_key": credentials.secret_access_key,
        "token": credentials.session_token,
        "expiry_time": credentials.expires_at.ToJsonString(),
    }
    if response.account_id:
        metadata["account_id"] = response.account_id
    return metadata


def _scoped_request(
    request: Optional[grants_pb2.AssumeScopedRequest], fields: dict[str, Any], min_remaining: timedelta
) -> grants_pb2.AssumeScopedRequest:
    if request is not None and fields:
        raise ValueError("pass an AssumeScopedRequest or its fields as keyword arguments, not both")
    if request is None:
        if fields.get("duration") is not None:
            fields["duration"] = duration(fields["duration"])
        request = grants_pb2.AssumeScopedRequest(**fields)
    else:
        copy = grants_pb2.AssumeScopedRequest()
        copy.CopyFrom(request)
        request = copy
    request.min_remaining.CopyFrom(duration(min_remaining))
    return request


def _takes_timeout(method: Callable[..., Any]) -> bool:
    """Whether `method` (an `assume_scoped`) accepts `timeout=`: GrantsClient's does; a
    caller's own stand-in may not, and is then called without one."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "timeout" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _backoff_after(error: Exception, default: timedelta) -> timedelta:
    """How long to go on without asking after `error`: its RetryInfo delay (bounded)
    when it carries one, else `default`."""
    delay = None
    if isinstance(error, grpc.RpcError):
        try:
            delay = retry_delay(error)
        except Exception:  # a hint that cannot be read is no hint
            delay = None
    if delay is None:
        return default
    low, high = _RETRY_DELAY_BOUNDS
    return min(max(delay, low), high)


def scoped_credentials(
    client: "GrantsClient",
    request: Optional[grants_pb2.AssumeScopedRequest] = None,
    *,
    min_remaining: timedelta = DEFAULT_MIN_REMAINING,
    first: Optional[grants_pb2.AssumeScopedResponse] = None,
    early_refresh_timeout: timedelta = EARLY_REFRESH_TIMEOUT,
    failure_backoff: timedelta = FAILURE_BACKOFF,
    **fields: Any,
) -> botocore.credentials.RefreshableCredentials:
    """botocore credentials that call AssumeScoped through `client` whenever they come
    within the refresh windows of their expiry (`refresh_windows(min_remaining)`).

    The request is `request` or its fields as keyword arguments (`bucket`, `prefix`,
    `access`, `list`, `duration`), as for `client.assume_scoped`; every call asks for
    `min_remaining` of life left (less than the longest session the scope may have,
    or the service answers FAILED_PRECONDITION). `first`, an answer to the same
    request, is used until it needs refreshing; without it the first use calls
    AssumeScoped. `client` must stay open while the credentials are in use.

    A failed refresh (a `grpc.RpcError`) keeps the old credentials in the advisory
    window and is raised by the S3 call in the mandatory one. In the advisory window a
    refresh waits at most `early_refresh_timeout` (default 2.5 s, or the client's
    deadline when shorter), and after one fails the S3 calls go on with the current
    credentials without asking for `failure_backoff` (default 20 s; the error's
    `RetryInfo` delay when it carries one), so that a hung service does not hold up
    every call. In the mandatory window every call that needs them asks, with the
    client's full deadline. (A stand-in `client` whose `assume_scoped` takes no
    `timeout` is called without one.)
    """
    scoped = _scoped_request(request, dict(fields), min_remaining)
    advisory, mandatory = refresh_windows(min_remaining)
    if early_refresh_timeout <= timedelta(0):
        raise ValueError("early_refresh_timeout must be positive")
    if failure_backoff < timedelta(0):
        raise ValueError("failure_backoff must not be negative")
    with_timeout = _takes_timeout(client.assume_scoped)
    client_timeout = getattr(client, "_timeout", None)
    early_timeout = early_refresh_timeout.total_seconds()
    if isinstance(client_timeout, (int, float)) and client_timeout < early_timeout:
        early_timeout = float(client_timeout)
    # The answer the credentials hold now, and until when (time.monotonic) a failed
    # early refresh is not tried again. botocore calls refresh() under its refresh lock;
    # this lock only keeps the two together.
    state: dict[str, Any] = {"current": _metadata(first) if first is not None else None, "quiet_until": None}
    lock = threading.Lock()

    def keepable() -> bool:
        """The current credentials may be kept after a failure: botocore would not
        raise it (outside the mandatory window)."""
        try:
            if credentials._expiry_time is None or state["current"] is None:
                return False
            return credentials._seconds_remaining() >= mandatory.total_seconds()
        except Exception:
            return False

    def refresh() -> dict[str, Any]:
        early = keepable()
        with lock:
            quiet_until = state["quiet_until"]
            if early and quiet_until is not None and time.monotonic() < quiet_until:
                # A refresh failed a moment ago: go on with the current credentials
                # (botocore keeps them as after a failure, without logging one).
                return state["current"]
        try:
            if early and with_timeout:
                answer = client.assume_scoped(scoped, timeout=early_timeout)
            else:
                answer = client.assume_scoped(scoped)
            metadata = _metadata(answer)
        except Exception as error:
            if early:
                with lock:
                    state["quiet_until"] = time.monotonic() + _backoff_after(error, failure_backoff).total_seconds()
            raise
        with lock:
            state["current"] = metadata
            state["quiet_until"] = None
        return metadata

    credentials: botocore.credentials.RefreshableCredentials
    if first is not None:
        credentials = botocore.credentials.RefreshableCredentials.create_from_metadata(
            _metadata(first), refresh_using=refresh, method=CREDENTIAL_METHOD
        )
    else:
        credentials = botocore.credentials.DeferredRefreshableCredentials(refresh_using=refresh, method=CREDENTIAL_METHOD)
    # Per instance, as botocore's own `advisory_timeout`/`mandatory_timeout` set them.
    # (refresh() reads `credentials`, bound here, only when botocore calls it.)
    credentials._advisory_refresh_timeout = advisory.total_seconds()
    credentials._mandatory_refresh_timeout = mandatory.total_seconds()
    return credentials


class _Fixed(botocore.credentials.CredentialProvider):
    """A credential provider answering given credentials, for a botocore session."""

    METHOD = CREDENTIAL_METHOD

    def __init__(self, credentials: botocore.credentials.Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> botocore.credentials.Credentials:
        return self._credentials


def s3_client(
    response: grants_pb2.AssumeScopedResponse,
    config: Optional[botocore.config.Config] = None,
    session: Optional[boto3.session.Session] = None,
    *,
    credentials: Optional[botocore.credentials.Credentials] = None,
) -> Any:
    """An S3 client for the prefix of an AssumeScoped answer: its region, its endpoint
    (when the service names one, e.g. an S3-compatible store), path-style addressing
    when it asks for it, and its temporary credentials.

    The answer's credentials are fixed: they stop working at
    `response.credentials.expires_at` (15 minutes to 1 hour) and are never renewed.
    For longer use pass `credentials=scoped_credentials(client, ..., first=response)`
    (then `session` must be None), or use `scoped_s3_client`.

    The credentials only work under `response.prefix` of `response.bucket`. `config`
    is merged over the addressing style (retries, timeouts…); `session` defaults to a
    new one, so the process's default session is left alone. Raises `ValueError` when
    the answer carries no complete credentials.
    """
    if credentials is None:
        _check_secrets(response)
    fixed = response.credentials
    base = botocore.config.Config(s3={"addressing_style": "path" if response.force_path_style else "auto"})
    options: dict[str, Any] = {
        "endpoint_url": response.endpoint or None,
        "region_name": response.region,
        "config": base.merge(config) if config is not None else base,
    }
    if credentials is None:
        options.update(
            aws_access_key_id=fixed.access_key_id,
            aws_secret_access_key=fixed.secret_access_key,
            aws_session_token=fixed.session_token,
        )
        return (session or boto3.session.Session()).client("s3", **options)
    if session is not None:
        raise ValueError("pass either credentials or a session: the credentials go into a session of their own")
    # A botocore session whose only credential source is `credentials`: boto3 takes
    # refreshable credentials through a session, not as client arguments.
    core = botocore.session.Session()
    core.register_component("credential_provider", botocore.credentials.CredentialResolver([_Fixed(credentials)]))
    return boto3.session.Session(botocore_session=core).client("s3", **options)


def scoped_s3_client(
    client: "GrantsClient",
    request: Optional[grants_pb2.AssumeScopedRequest] = None,
    *,
    min_remaining: timedelta = DEFAULT_MIN_REMAINING,
    config: Optional[botocore.config.Config] = None,
    early_refresh_timeout: timedelta = EARLY_REFRESH_TIMEOUT,
    failure_backoff: timedelta = FAILURE_BACKOFF,
    **fields: Any,
) -> Any:
    """An S3 client whose credentials refresh themselves, for workers that outlive one
    session: calls AssumeScoped through `client` (with `request`, or its fields as
    keyword arguments: `bucket`, `prefix`, `access`, `list`, `duration`), configures
    the client from the answer as `s3_client` does, with `scoped_credentials`, which
    call AssumeScoped again before they expire, each time asking for `min_remaining`
    of life left (default 20 minutes, beyond botocore's 15-minute refresh window).
    `early_refresh_timeout` and `failure_backoff` are `scoped_credentials`'s.

        s3 = scoped_s3_client(client, bucket="reports", prefix="team-a/",
                              access=grants_pb2.ACCESS_READ_WRITE, list=True)

    Keep `client` open while the S3 client is in use. Errors of the first call are
    raised here (`grpc.RpcError`).
    """
    scoped = _scoped_request(request, dict(fields), min_remaining)
    first = client.assume_scoped(scoped)
    credentials = scoped_credentials(
        client, scoped, min_remaining=min_remaining, first=first,
        early_refresh_timeout=early_refresh_timeout, failure_backoff=failure_backoff,
    )
    return s3_client(first, config=config, credentials=credentials)
