#!/usr/bin/env python3
"""Calls a running storage-grants server the way a Python service would.

A polyglot check of the API contract: the Python stubs are generated at run time from
proto/storagegrants/v1/grants.proto (nothing generated is checked in), then every test
calls the server over gRPC and, where a grant comes back, uses it over plain HTTP.

Run by scripts/python-client-test.sh, which starts s3s-fs and the server. Environment:
  STORAGE_GRANTS_ADDR   host:port of the server (plaintext gRPC)
  STORAGE_GRANTS_TOKEN  a dev bearer token the server accepts
  DEMO_BUCKET           bucket of DEMO_KEY
  DEMO_KEY              an object the token's caller may read
  DEMO_CONTENT          DEMO_KEY's exact content
  DENIED_KEY            a valid key in DEMO_BUCKET outside the caller's rules
Optional:
  STORAGE_GRANTS_PROTO_DIR  proto root (default: <repo>/proto)

A presigned URL is a bearer credential: this script never prints one. On failure it
reports status codes, lengths and field names only.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import importlib.resources
import os
import shutil
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Optional

import grpc
from google.protobuf import descriptor_pb2, duration_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status
from grpc_tools import protoc

SERVICE = "storagegrants.v1.GrantService"
HEALTH_SERVICE = "grpc.health.v1.Health"
PROTO_FILE = "storagegrants/v1/grants.proto"

RPC_TIMEOUT_S = 10.0  # every call is bounded
HTTP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 10.0  # how long the server may take to report GrantService SERVING
CLOCK_SLACK_S = 2.0  # expires_at is computed on the server, to the second

# Codes that mean the server failed rather than answered. GrantWrite and AssumeScoped
# are only required not to end in these while they are being built.
SERVER_FAILURE_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

REQUIRED_ENV = (
    "STORAGE_GRANTS_ADDR",
    "STORAGE_GRANTS_TOKEN",
    "DEMO_BUCKET",
    "DEMO_KEY",
    "DEMO_CONTENT",
    "DENIED_KEY",
)


def read_env() -> dict[str, str]:
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        sys.stderr.write(f"grants_client_test: missing environment variables: {', '.join(missing)}\n")
        sys.exit(2)
    return {name: os.environ[name] for name in REQUIRED_ENV}


def generate_stubs(proto_dir: Path) -> tuple[ModuleType, ModuleType]:
    """Compiles grants.proto with grpc_tools' bundled protoc; returns (pb2, pb2_grpc)."""
    out = Path(tempfile.mkdtemp(prefix="storage-grants-stubs-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    # The well-known types (duration, timestamp) ship inside grpc_tools.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        PROTO_FILE,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto_dir / PROTO_FILE}")
    sys.path.insert(0, str(out))
    pb2 = importlib.import_module("storagegrants.v1.grants_pb2")
    pb2_grpc = importlib.import_module("storagegrants.v1.grants_pb2_grpc")
    return pb2, pb2_grpc


ENV = read_env()
PROTO_DIR = Path(os.environ.get("STORAGE_GRANTS_PROTO_DIR") or Path(__file__).resolve().parents[2] / "proto")
pb2, pb2_grpc = generate_stubs(PROTO_DIR)


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def http_get(url: str, headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], bytes]:
    """GETs a presigned URL. Errors carry the status code only, never the URL."""
    request = urllib.request.Request(url, headers=dict(headers or {}), method="GET")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        # `from None`: the chained exception would not show the URL, but be certain.
        raise AssertionError(f"download with the granted URL failed: HTTP {err.code}") from None
    except urllib.error.URLError as err:
        raise AssertionError(f"download with the granted URL failed: {type(err.reason).__name__}") from None


def wait_until_serving(channel: grpc.Channel, service: str, timeout_s: float) -> bool:
    """Polls grpc.health.v1 until `service` is SERVING; False when it is not in time."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT_S)
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return True
        except grpc.RpcError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def timestamp_seconds(ts: Any) -> float:
    return ts.seconds + ts.nanos / 1e9


class GrantsClientTest(unittest.TestCase):
    channel: grpc.Channel
    stub: Any
    token: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.channel = grpc.insecure_channel(ENV["STORAGE_GRANTS_ADDR"])
        try:
            grpc.channel_ready_future(cls.channel).result(timeout=RPC_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            raise AssertionError(f"no gRPC server reachable at {ENV['STORAGE_GRANTS_ADDR']}") from None
        cls.stub = pb2_grpc.GrantServiceStub(cls.channel)
        cls.token = ENV["STORAGE_GRANTS_TOKEN"]
        # The server reports GrantService SERVING only once it has reached its store,
        # which may be just after its port opens: wait as a client with a readiness
        # gate would. Not reaching it is left to test_health_serving to report.
        wait_until_serving(cls.channel, SERVICE, READY_TIMEOUT_S)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.channel.close()

    # -- helpers ----------------------------------------------------------------------

    def expect_error(self, call: Callable[..., Any], request: Any, code: grpc.StatusCode, **kwargs: Any) -> grpc.RpcError:
        """Calls and asserts the call fails with `code`; returns the error."""
        kwargs.setdefault("timeout", RPC_TIMEOUT_S)
        try:
            call(request, **kwargs)
        except grpc.RpcError as err:
            self.assertEqual(err.code(), code, f"expected {code.name}, got {err.code().name}: {err.details()!r}")
            return err
        self.fail(f"expected {code.name}, but the call succeeded")

    def expect_bad_request(self, request: Any, field: str) -> None:
        """INVALID_ARGUMENT with a google.rpc.BadRequest field violation on `field`."""
        err = self.expect_error(self.stub.GrantRead, request, grpc.StatusCode.INVALID_ARGUMENT, metadata=auth(self.token))
        self.assertTrue(err.details(), "INVALID_ARGUMENT without a message")
        status = rpc_status.from_call(err)
        self.assertIsNotNone(status, "INVALID_ARGUMENT without rich details (no grpc-status-details-bin trailer)")
        violations = []
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(bad_request.field_violations)
        detail_types = [d.type_url for d in status.details]
        self.assertTrue(violations, f"no google.rpc.BadRequest field violations in details {detail_types}")
        fields = [v.field for v in violations]
        self.assertIn(field, fields, f"BadRequest names fields {fields}, expected {field!r}")
        for violation in violations:
            if violation.field == field:
                self.assertTrue(violation.description.strip(), f"violation on {field!r} has an empty description")

    def grant_read(self, **fields: Any) -> Any:
        request = pb2.GrantReadRequest(bucket=ENV["DEMO_BUCKET"], key=ENV["DEMO_KEY"], **fields)
        return self.stub.GrantRead(request, metadata=auth(self.token), timeout=RPC_TIMEOUT_S)

    # -- GrantRead ----------------------------------------------------------------------

    def test_grant_read_downloads_the_object(self) -> None:
        ttl_s = 60
        before = time.time()
        response = self.grant_read(ttl=duration_pb2.Duration(seconds=ttl_s))
        after = time.time()

        self.assertTrue(response.url.startswith(("http://", "https://")), "url is empty or not http(s)")
        self.assertEqual(response.method, "GET")
        # Names only in the message: header values may be signed material.
        self.assertFalse(response.headers, f"a plain GET grant needs no headers, got {sorted(response.headers)}")
        self.assertTrue(response.grant_id, "grant_id is empty")
        self.assertTrue(response.HasField("expires_at"), "expires_at is unset")
        expires = timestamp_seconds(response.expires_at)
        self.assertGreater(expires, after, f"expires_at is {after - expires:.1f}s in the past")
        self.assertLessEqual(
            expires,
            after + ttl_s + CLOCK_SLACK_S,
            f"expires_at is {expires - before:.1f}s away, more than the requested {ttl_s}s",
        )

        status, _, body = http_get(response.url, dict(response.headers))
        self.assertEqual(status, 200)
        expected = ENV["DEMO_CONTENT"].encode()
        if body != expected:
            self.fail(
                f"downloaded {len(body)} bytes (sha256 {digest(body)}), "
                f"expected {len(expected)} (sha256 {digest(expected)})"
            )

    def test_grant_read_response_header_overrides(self) -> None:
        content_type = "text/x-storage-grants-test; charset=utf-8"
        disposition = 'attachment; filename="hello from storage-grants.txt"'
        response = self.grant_read(response_content_type=content_type, response_content_disposition=disposition)
        _, headers, body = http_get(response.url, dict(response.headers))
        self.assertEqual(headers.get("content-type"), content_type, "Content-Type override not applied")
        self.assertEqual(headers.get("content-disposition"), disposition, "Content-Disposition override not applied")
        self.assertEqual(len(body), len(ENV["DEMO_CONTENT"].encode()), "download length differs")

    # -- identity and rules ---------------------------------------------------------------

    def test_no_credentials_is_unauthenticated(self) -> None:
        request = pb2.GrantReadRequest(bucket=ENV["DEMO_BUCKET"], key=ENV["DEMO_KEY"])
        self.expect_error(self.stub.GrantRead, request, grpc.StatusCode.UNAUTHENTICATED)

    def test_wrong_token_is_unauthenticated(self) -> None:
        request = pb2.GrantReadRequest(bucket=ENV["DEMO_BUCKET"], key=ENV["DEMO_KEY"])
        # A wrong token, and the right token under another scheme than Bearer.
        for scheme, value in (("Bearer", f"not-{self.token}"), ("Basic", self.token)):
            with self.subTest(scheme=scheme):
                self.expect_error(
                    self.stub.GrantRead,
                    request,
                    grpc.StatusCode.UNAUTHENTICATED,
                    metadata=(("authorization", f"{scheme} {value}"),),
                )

    def test_key_outside_rules_is_permission_denied(self) -> None:
        request = pb2.GrantReadRequest(bucket=ENV["DEMO_BUCKET"], key=ENV["DENIED_KEY"])
        self.expect_error(self.stub.GrantRead, request, grpc.StatusCode.PERMISSION_DENIED, metadata=auth(self.token))

    # -- validation ---------------------------------------------------------------------

    def test_bad_key_is_invalid_argument_with_field_violation(self) -> None:
        for key in ("a/../b", ""):
            with self.subTest(key=key):
                self.expect_bad_request(pb2.GrantReadRequest(bucket=ENV["DEMO_BUCKET"], key=key), "key")

    def test_negative_ttl_is_invalid_argument_with_field_violation(self) -> None:
        request = pb2.GrantReadRequest(
            bucket=ENV["DEMO_BUCKET"], key=ENV["DEMO_KEY"], ttl=duration_pb2.Duration(seconds=-5)
        )
        self.expect_bad_request(request, "ttl")

    # -- standard services ----------------------------------------------------------------

    def test_health_serving(self) -> None:
        # No credentials, as grpc_health_probe and Kubernetes gRPC probes send none.
        health = health_pb2_grpc.HealthStub(self.channel)
        for service in ("", SERVICE):
            with self.subTest(service=service or "<server>"):
                response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT_S)
                self.assertEqual(
                    response.status,
                    health_pb2.HealthCheckResponse.SERVING,
                    f"health of {service or 'the server'!r} is "
                    f"{health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}",
                )

    def reflect(self, requests: Iterable[Any]) -> tuple[str, list[Any]]:
        """Asks server reflection, v1 first then v1alpha; returns (version, responses).

        grpcio-reflection ships only v1alpha messages; v1 has the same messages under
        another service name, so they serve for both.
        """
        requests = list(requests)
        last_error: Optional[grpc.RpcError] = None
        for version in ("v1", "v1alpha"):
            method = self.channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            try:
                # With the token, as grpcurl sends its -H headers to reflection too.
                responses = method(iter(requests), metadata=auth(self.token), timeout=RPC_TIMEOUT_S)
                return version, list(responses)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                last_error = err
        raise AssertionError(f"server reflection is not served (v1 nor v1alpha): {last_error.details()!r}")

    def test_reflection_lists_services(self) -> None:
        version, responses = self.reflect([reflection_pb2.ServerReflectionRequest(list_services="")])
        self.assertEqual(len(responses), 1, f"reflection {version}: expected one response")
        response = responses[0]
        self.assertTrue(
            response.HasField("list_services_response"),
            f"reflection {version}: no list_services_response (error: {response.error_response.error_message!r})",
        )
        names = {service.name for service in response.list_services_response.service}
        for expected in (SERVICE, HEALTH_SERVICE):
            self.assertIn(expected, names, f"reflection {version} lists {sorted(names)}")

    def test_reflection_describes_grant_service(self) -> None:
        # What grpcurl and `buf curl` need: the file that defines the service.
        version, responses = self.reflect([reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)])
        response = responses[0]
        self.assertTrue(
            response.HasField("file_descriptor_response"),
            f"reflection {version}: no descriptor for {SERVICE} "
            f"(error: {response.error_response.error_message!r})",
        )
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in response.file_descriptor_response.file_descriptor_proto
        ]
        names = [f.name for f in files]
        self.assertIn(PROTO_FILE, names, f"reflection {version}: descriptor files {names}")

    # -- not yet built: only "does not fail inside the server" --------------------------------

    def call_status(self, call: Callable[..., Any], request: Any) -> tuple[grpc.StatusCode, Any]:
        """Returns (code, response-or-None) without raising on a gRPC error."""
        try:
            return grpc.StatusCode.OK, call(request, metadata=auth(self.token), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as err:
            return err.code(), None

    def test_grant_write_answers(self) -> None:
        # TODO(tighten): once GrantWrite is built, require OK, PUT the content with the
        # returned headers, and GET it back through GrantRead.
        key = ENV["DEMO_KEY"].rsplit("/", 1)[0] + "/uploaded-by-python-client.txt"
        request = pb2.GrantWriteRequest(
            bucket=ENV["DEMO_BUCKET"], key=key, ttl=duration_pb2.Duration(seconds=60), content_type="text/plain"
        )
        code, _ = self.call_status(self.stub.GrantWrite, request)
        self.assertNotIn(code, SERVER_FAILURE_CODES, f"GrantWrite ended in {code.name}")

    def test_assume_scoped_answers(self) -> None:
        # TODO(tighten): once AssumeScoped is built (and a rule grants assume-read),
        # require OK and read DEMO_KEY with the returned credentials.
        prefix = ENV["DEMO_KEY"].rsplit("/", 1)[0] + "/"
        request = pb2.AssumeScopedRequest(
            bucket=ENV["DEMO_BUCKET"], prefix=prefix, access=pb2.ACCESS_READ, duration=duration_pb2.Duration(seconds=900)
        )
        code, _ = self.call_status(self.stub.AssumeScoped, request)
        self.assertNotIn(code, SERVER_FAILURE_CODES, f"AssumeScoped ended in {code.name}")


def main() -> int:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(GrantsClientTest)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    # A failed subtest is reported per subtest; count each test method once.
    not_passed = sorted(
        {getattr(test, "test_case", test).id().rsplit(".", 1)[-1] for test, _ in result.failures + result.errors}
    )
    passed = result.testsRun - len(not_passed) - len(result.skipped)
    verdict = "PASS" if result.wasSuccessful() else "FAIL"
    print(
        f"\nstorage-grants python client test: {verdict}: {passed} of {result.testsRun} tests passed "
        f"(server {ENV['STORAGE_GRANTS_ADDR']})"
    )
    for name in not_passed:
        print(f"  not passed: {name}")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
