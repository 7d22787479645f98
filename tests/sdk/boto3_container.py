"""boto3, unmodified and configured by environment only, on scoped credentials it
fetches (and fetches again) by itself from a container-credentials endpoint.

The environment (set by scripts/sdk-credentials-test.sh):
  AWS_CONTAINER_CREDENTIALS_FULL_URI   the endpoint: the service's HTTP gateway, or the
                                       credentials proxy (sidecar mode)
  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE  the caller's token; behind the proxy, which
                                       holds the caller's token itself, the app's token
                                       the proxy wrote
  AWS_REGION, AWS_ENDPOINT_URL         the region and moto's S3
  SDK_BUCKET, SDK_PREFIX, SDK_KEY_TAG  where to write (SDK_PREFIX/SDK_KEY_TAG/...)
  SDK_AUDIT_LOG, SDK_CALLER            the service's log and the caller, to count fetches
  SDK_SECRETS_OUT                      optional: a file the secret key and session token
                                       are appended to, so the caller can check that no
                                       log holds them (never printed)

What it proves:
  1. put, get and list inside the prefix work, and the SDK fetched credentials once for
     all of them (it caches them: no fetch per call);
  2. refresh: botocore refreshes 15 minutes before expiry (advisory: a failed refresh is
     tolerated) and 10 minutes before (mandatory: it blocks until it has credentials).
     Its clock is moved forward into each window in turn; the SDK must fetch again by
     itself, and every call must succeed. The service's clock is not moved, so it
     answers with credentials that, by its clock, still have their whole life left.

Exit 0 when everything held, 1 otherwise. No secret is printed.
"""

import datetime
import os
import sys

import botocore.credentials as botocore_credentials

from fetches import count

# --- the clock hook, installed before any credentials exist -----------------------------
# botocore reads the time for credential expiry through botocore.credentials._local_now.
# RefreshableCredentials binds it as the default of its `time_fetcher` argument when the
# module is imported, so replacing the module attribute alone changes nothing: the
# default is replaced too, and the test checks below that the credentials in use
# really read the shifted clock.
_real_now = botocore_credentials._local_now
_shift = datetime.timedelta(0)


def _shifted_now():
    return _real_now() + _shift


botocore_credentials._local_now = _shifted_now
_init = botocore_credentials.RefreshableCredentials.__init__
_params = _init.__code__.co_varnames[: _init.__code__.co_argcount]
_defaults = list(_init.__defaults__)
_defaults[_params[-len(_defaults) :].index("time_fetcher")] = _shifted_now
_init.__defaults__ = tuple(_defaults)

import boto3  # noqa: E402  (after the hook, so nothing captured the real clock first)

bucket = os.environ["SDK_BUCKET"]
prefix = os.environ["SDK_PREFIX"]
tag = os.environ.get("SDK_KEY_TAG", "boto3")
audit_log = os.environ["SDK_AUDIT_LOG"]
caller = os.environ["SDK_CALLER"]
name = f"boto3[{tag}]"

failures = []


def say(message):
    print(f"{name}: {message}", flush=True)


def check(condition, message):
    if condition:
        say(f"ok   {message}")
    else:
        say(f"FAIL {message}")
        failures.append(message)
    return condition


def fetches():
    return count(audit_log, caller, prefix)


# Counted before the client exists: boto3 fetches credentials when it makes the client.
fetches_before, sessions_before = fetches()
session = boto3.Session()
s3 = session.client("s3")

# --- 1. put, get, list inside the prefix ------------------------------------------------
key = f"{prefix}{tag}/hello.txt"
body = f"written by {name} with credentials it fetched itself".encode()
calls = 0
try:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    calls = 3
    check(got == body, f"put then get s3://{bucket}/{key} returns the bytes written")
    check(key in listed, f"list s3://{bucket}/{prefix} shows it ({len(listed)} keys under the prefix)")
except Exception as e:  # noqa: BLE001  (any SDK failure is a test failure, reported)
    check(False, f"put/get/list inside the prefix: {type(e).__name__}: {e}")

creds = session.get_credentials()
check(creds is not None and creds.method == "container-role",
      f"the credentials came from the container provider (method={getattr(creds, 'method', None)})")
if failures:
    sys.exit(1)
check(creds._time_fetcher is _shifted_now, "the SDK's credentials read the test's clock hook")

fetched, sessions = fetches()
check(fetched - fetches_before == 1,
      f"one fetch at the endpoint for {calls} calls (counted {fetched - fetches_before}): the SDK caches")

left = creds._seconds_remaining()
check(left > 20 * 60, f"the credentials have {left / 60:.1f} min left, outside every SDK's refresh window")
frozen = creds.get_frozen_credentials()
first_key_id = frozen.access_key
if os.environ.get("SDK_SECRETS_OUT"):
    fd = os.open(os.environ["SDK_SECRETS_OUT"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{frozen.secret_key}\n{frozen.token}\n")


def calls_in_window(label, minutes_left_wanted, n_calls=3):
    """Moves the SDK's clock so the credentials have MINUTES_LEFT_WANTED left, then makes
    N_CALLS calls; each must succeed, and the SDK must have fetched again by itself."""
    global _shift
    before, _ = fetches()
    _shift = datetime.timedelta(seconds=creds._expiry_time.timestamp() - _real_now().timestamp()
                                - minutes_left_wanted * 60)
    say(f"clock moved {_shift.total_seconds() / 60:.1f} min ahead: "
        f"{creds._seconds_remaining() / 60:.1f} min left by the SDK's clock ({label} window)")
    ok = 0
    for i in range(n_calls):
        try:
            s3.put_object(Bucket=bucket, Key=f"{prefix}{tag}/{label}-{i}.txt", Body=b"x")
            s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}{tag}/", MaxKeys=5)
            ok += 1
        except Exception as e:  # noqa: BLE001
            say(f"call {i} in the {label} window failed: {type(e).__name__}: {e}")
    after, _ = fetches()
    check(ok == n_calls, f"{label} window: {ok}/{n_calls} put+list rounds succeeded")
    check(after > before, f"{label} window: the SDK fetched again by itself ({after - before} fetches)")


# 12.5 min left: inside botocore's 15-min advisory window, outside the 10-min mandatory one.
calls_in_window("advisory", 12.5)
# 7 min left: inside the mandatory window; botocore blocks on the fetch.
calls_in_window("mandatory", 7)

fetched, sessions = fetches()
say(f"fetches at the endpoint: {fetched - fetches_before}, new STS sessions: {sessions - sessions_before}; "
    f"{'the same' if creds.get_frozen_credentials().access_key == first_key_id else 'new'} access key "
    "(the service's clock did not move, so it answered from its cache with credentials that still "
    "have > 20 min left by its clock)")
say("note: moto evaluates no session policies, so denial outside the prefix is not shown here")
if failures:
    say(f"{len(failures)} check(s) failed")
    sys.exit(1)
say("all checks passed")
