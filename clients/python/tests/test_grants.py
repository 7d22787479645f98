#!/usr/bin/env python3
"""Calls a running storage-grants server the way a Python service would, through the
installed `storage-grants-client` package (clients/python).

A polyglot check of the API contract and of the package: the stubs are the ones the
package generated from proto/storagegrants/v1/grants.proto when it was built, and every
test calls the server over gRPC and, where a grant comes back, uses it over plain HTTP
with the package's helpers, or with boto3 configured by `storagegrants.s3.s3_client`.

Run by scripts/clients-test.sh, which builds and installs the package, starts s3s-fs
(the store presigned URLs point at), moto (the STS AssumeScoped calls, whose credentials
work against moto's own S3) and the server. Environment:
  SG_TEST_ADDR   host:port of the server (plaintext gRPC)
  SG_TEST_TOKEN  a dev bearer token the server accepts
  DEMO_BUCKET           bucket of DEMO_KEY, in the presigned store and in the STS's S3
  DEMO_KEY              an object the token's caller may read; the caller may read,
                        write, assume-read, assume-write and list under its folder
  DEMO_CONTENT          DEMO_KEY's exact content
  DENIED_KEY            a valid key in DEMO_BUCKET outside the caller's rules

The S3 client of the AssumeScoped test is configured from the response alone: run it
with an empty AWS config (the script does) so no profile of the machine's can add to it.

Presigned URLs and temporary credentials are bearer credentials: this script never
prints one. On failure it reports status codes, S3 error codes, lengths and field or
header names only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import socket
import subprocess
import threading
import sys
import time
import unittest
from datetime import timedelta
from typing import Any, Callable, Iterable, Optional

import boto3
import botocore.config
import botocore.credentials
import botocore.exceptions
import grpc
from google.protobuf import descriptor_pb2, duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from storagegrants import (
    GrantedRequestError,
    GrantsClient,
    HttpResponse,
    download,
    field_violations,
    rich_status,
    upload,
)
from storagegrants.http import send
from storagegrants.s3 import (
    DEFAULT_MIN_REMAINING,
    EARLY_REFRESH_TIMEOUT,
    refresh_windows,
    s3_client,
    scoped_credentials,
    scoped_s3_client,
)
from storagegrants.v1 import grants_pb2 as pb2

SERVICE = "storagegrants.v1.GrantService"
HEALTH_SERVICE = "grpc.health.v1.Health"
PROTO_FILE = "storagegrants/v1/grants.proto"

RPC_TIMEOUT_S = 10.0  # every call is bounded
HTTP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 10.0  # how long the server may take to report GrantService SERVING
CLOCK_SLACK_S = 2.0  # expires_at is computed on the server, to the second
# AssumeScoped: the test rule's max TTL is 15 minutes (and STS's minimum is too).
SCOPED_MAX_S = 15 * 60 + 60

REQUIRED_ENV = (
    "SG_TEST_ADDR",
    "SG_TEST_TOKEN",
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


ENV = read_env()


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def refused(call: Callable[[], HttpResponse]) -> HttpResponse:
    """Runs an upload or download expected to be refused; returns the store's answer.
    A request the store accepts comes back as is, for the caller's status assertion."""
    try:
        return call()
    except GrantedRequestError as err:
        return err.response


def sha256_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


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


class HungService:
    """A service that hangs: a TCP listener on loopback that accepts connections and
    never answers (as a stopped process, or a partition that drops replies, does)."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return "127.0.0.1:%d" % self._listener.getsockname()[1]

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._accepted.append(connection)  # held open, never read or answered

    def close(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for connection in self._accepted:
            connection.close()
        self._thread.join(timeout=2)


class GrantsClientTest(unittest.TestCase):
    channel: grpc.Channel
    client: GrantsClient  # sends the test token
    anonymous: GrantsClient  # the same channel, no token
    token: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.channel = grpc.insecure_channel(ENV["SG_TEST_ADDR"])
        try:
            grpc.channel_ready_future(cls.channel).result(timeout=RPC_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            raise AssertionError(f"no gRPC server reachable at {ENV['SG_TEST_ADDR']}") from None
        cls.token = ENV["SG_TEST_TOKEN"]
        cls.client = GrantsClient(cls.channel, token=cls.token, timeout=RPC_TIMEOUT_S)
        cls.anonymous = GrantsClient(cls.channel, timeout=RPC_TIMEOUT_S)
        # The server reports GrantService SERVING only once it has reached its store,
        # which may be just after its port opens: wait as a client with a readiness
        # gate would. Not reaching it is left to test_health_serving to report.
        wait_until_serving(cls.channel, SERVICE, READY_TIMEOUT_S)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.channel.close()

    # -- helpers ----------------------------------------------------------------------

    def expect_error(self, call: Callable[..., Any], request: Any, code: grpc.StatusCode, **kwargs: Any) -> grpc.RpcError:
        """Calls `call` (a GrantsClient method) and asserts the call fails with `code`;
        returns the error."""
        kwargs.setdefault("timeout", RPC_TIMEOUT_S)
        try:
            call(request, **kwargs)
        except grpc.RpcError as err:
            self.assertEqual(err.code(), code, f"expected {code.name}, got {err.code().name}: {err.details()!r}")
            return err
        self.fail(f"expected {code.name}, but the call succeeded")

    def expect_bad_request(self, request: Any, field: str, call: Optional[Callable[..., Any]] = None) -> None:
        """INVALID_ARGUMENT with a google.rpc.BadRequest field violation on `field`.
        `call` defaults to GrantRead."""
        call = call or self.client.grant_read
        err = self.expect_error(call, request, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(err.details(), "INVALID_ARGUMENT without a message")
        status = rich_status(err)
        self.assertIsNotNone(status, "INVALID_ARGUMENT without rich details (no grpc-status-details-bin trailer)")
        assert status is not None
        violations = field_violations(err)
        detail_types = [d.type_url for d in status.details]
        self.assertTrue(violations, f"no google.rpc.BadRequest field violations in details {detail_types}")
        fields = [v.field for v in violations]
        self.assertIn(field, fields, f"BadRequest names fields {fields}, expected {field!r}")
        for violation in violations:
            if violation.field == field:
                self.assertTrue(violation.description.strip(), f"violation on {field!r} has an empty description")

    def grant_read(self, **fields: Any) -> pb2.GrantReadResponse:
        fields.setdefault("bucket", ENV["DEMO_BUCKET"])
        fields.setdefault("key", ENV["DEMO_KEY"])
        return self.client.grant_read(**fields)

    def grant_write(self, key: str, **fields: Any) -> pb2.GrantWriteResponse:
        fields.setdefault("ttl", timedelta(seconds=60))
        return self.client.grant_write(bucket=ENV["DEMO_BUCKET"], key=key, **fields)

    def assume_scoped(self, **fields: Any) -> pb2.AssumeScopedResponse:
        fields.setdefault("bucket", ENV["DEMO_BUCKET"])
        return self.client.assume_scoped(**fields)

    def assert_expiry(self, expires_at: Any, before: float, after: float, max_s: float, what: str) -> None:
        """`expires_at` lies after `after` and at most `max_s` (plus clock slack) after `before`."""
        expires = timestamp_seconds(expires_at)
        self.assertGreater(expires, after, f"{what}: expires_at is {after - expires:.1f}s in the past")
        self.assertLessEqual(
            expires,
            before + max_s + CLOCK_SLACK_S,
            f"{what}: expires_at is {expires - before:.1f}s away, more than {max_s:.0f}s",
        )

    def assert_same_bytes(self, got: bytes, expected: bytes, what: str) -> None:
        if got != expected:
            self.fail(
                f"{what}: got {len(got)} bytes (sha256 {digest(got)}), "
                f"expected {len(expected)} (sha256 {digest(expected)})"
            )

    def download(self, key: str) -> HttpResponse:
        """Reads `key` back through GrantRead and the package's download, whatever the
        store answers."""
        response = self.grant_read(key=key)
        return refused(lambda: download(response, timeout=HTTP_TIMEOUT_S))

    def assert_downloads(self, key: str, expected: bytes) -> dict[str, str]:
        """`key` reads back through GrantRead as exactly `expected`; returns the headers."""
        got = self.download(key)
        self.assertEqual(got.status, 200, f"reading {key} back: HTTP {got.status} ({got.s3_code})")
        self.assert_same_bytes(got.body, expected, f"reading {key} back")
        return got.headers

    def assert_absent(self, key: str) -> None:
        """`key` does not exist: a refused upload wrote nothing."""
        got = self.download(key)
        self.assertEqual(got.status, 404, f"{key} should not exist, reading it gave HTTP {got.status} ({got.s3_code})")

    # -- GrantRead ----------------------------------------------------------------------

    def test_grant_read_downloads_the_object(self) -> None:
        ttl_s = 60
        before = time.time()
        response = self.grant_read(ttl=timedelta(seconds=ttl_s))
        after = time.time()

        self.assertTrue(response.url.startswith(("http://", "https://")), "url is empty or not http(s)")
        self.assertEqual(response.method, "GET")
        # Names only in the message: header values may be signed material.
        self.assertFalse(response.headers, f"a plain GET grant needs no headers, got {sorted(response.headers)}")
        self.assertTrue(response.grant_id, "grant_id is empty")
        self.assertTrue(response.HasField("expires_at"), "expires_at is unset")
        self.assert_expiry(response.expires_at, before, after, ttl_s, "GrantRead")

        got = download(response, timeout=HTTP_TIMEOUT_S)
        self.assertEqual(got.status, 200)
        self.assert_same_bytes(got.body, ENV["DEMO_CONTENT"].encode(), "download")

    def test_grant_read_response_header_overrides(self) -> None:
        content_type = "text/x-storage-grants-test; charset=utf-8"
        disposition = 'attachment; filename="hello from storage-grants.txt"'
        response = self.grant_read(response_content_type=content_type, response_content_disposition=disposition)
        got = download(response, timeout=HTTP_TIMEOUT_S)
        self.assertEqual(got.headers.get("content-type"), content_type, "Content-Type override not applied")
        self.assertEqual(got.headers.get("content-disposition"), disposition, "Content-Disposition override not applied")
        self.assertEqual(len(got.body), len(ENV["DEMO_CONTENT"].encode()), "download length differs")

    # -- identity and rules ---------------------------------------------------------------

    def test_no_credentials_is_unauthenticated(self) -> None:
        request = pb2.GrantReadRequest(bucket=ENV["DEMO_BUCKET"], key=ENV["DEMO_KEY"])
        self.expect_error(self.anonymous.grant_read, request, grpc.StatusCode.UNAUTHENTICATED)

    def test_wrong_token_is_unauthenticated(self) -> None:
        request = pb2.GrantReadRequest(bucket=ENV["DEMO_BUCKET"], key=ENV["DEMO_KEY"])
        # A wrong token, and the right token under another scheme than Bearer.
        for scheme, value in (("Bearer", f"not-{self.token}"), ("Basic", self.token)):
            with self.subTest(scheme=scheme):
                self.expect_error(
                    self.anonymous.grant_read,
                    request,
                    grpc.StatusCode.UNAUTHENTICATED,
                    call_metadata=(("authorization", f"{scheme} {value}"),),
                )

    def test_a_token_read_from_a_file_with_its_newline_works(self) -> None:
        # A token file written with `echo` ends in a newline, which gRPC refuses in a
        # header value; the client sends the token without it.
        reading = GrantsClient(self.channel, token=lambda: self.token + "\n", timeout=RPC_TIMEOUT_S)
        self.assertTrue(reading.grant_read(bucket=ENV["DEMO_BUCKET"], key=ENV["DEMO_KEY"]).url)

    def test_a_zero_timeout_is_passed_on_not_replaced_by_the_default(self) -> None:
        # `timeout=0` is a deadline of its own, not "use the client's default".
        seen: dict[str, Any] = {}

        def rpc(request: Any, timeout: Optional[float], metadata: Any) -> None:
            seen["timeout"] = timeout

        self.client._call(rpc, None, 0, ())
        self.assertEqual(seen["timeout"], 0)
        self.client._call(rpc, None, None, ())
        self.assertEqual(seen["timeout"], RPC_TIMEOUT_S)

    def test_key_outside_rules_is_permission_denied(self) -> None:
        request = pb2.GrantReadRequest(bucket=ENV["DEMO_BUCKET"], key=ENV["DENIED_KEY"])
        self.expect_error(self.client.grant_read, request, grpc.StatusCode.PERMISSION_DENIED)

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

    # -- GrantWrite: presigned PUT --------------------------------------------------------

    PUT_KEY_DIR = ENV["DEMO_KEY"].rsplit("/", 1)[0]
    PUT_BODY = b"id,owner,amount\n1,py,42\n2,py,7\n"

    def put_pins(self, body: bytes) -> dict[str, Any]:
        """Every pin a presigned PUT can carry."""
        return dict(
            content_type="text/csv",
            content_length=len(body),
            checksum_sha256=sha256_base64(body),
            metadata={"owner": "py"},
            create_only=True,
        )

    def test_grant_write_put_uploads_and_reads_back(self) -> None:
        key = f"{self.PUT_KEY_DIR}/py-upload.csv"
        body = self.PUT_BODY
        before = time.time()
        response = self.grant_write(key, **self.put_pins(body))
        after = time.time()

        self.assertTrue(response.url.startswith(("http://", "https://")), "url is empty or not http(s)")
        self.assertEqual(response.method, "PUT")
        self.assertFalse(response.form_fields, f"a PUT grant has no form fields, got {sorted(response.form_fields)}")
        self.assertFalse(response.file_field, "a PUT grant has no file field")
        self.assertTrue(response.grant_id, "grant_id is empty")
        self.assertTrue(response.HasField("expires_at"), "expires_at is unset")
        self.assert_expiry(response.expires_at, before, after, 60, "GrantWrite PUT")
        names = sorted(response.headers)
        self.assertEqual(names, [n.lower() for n in names], f"header names are not lowercase: {names}")
        # Values of headers the uploader chose are compared; signed material is not shown.
        for name, value in (
            ("content-type", "text/csv"),
            ("x-amz-meta-owner", "py"),
            ("x-amz-checksum-sha256", sha256_base64(body)),
            ("if-none-match", "*"),
        ):
            self.assertIn(name, response.headers, f"the grant's headers {names} lack {name}")
            self.assertEqual(response.headers[name], value, f"header {name}")

        put = refused(lambda: upload(response, body, timeout=HTTP_TIMEOUT_S))
        self.assertEqual(put.status, 200, f"PUT with the granted headers: HTTP {put.status} ({put.s3_code})")

        headers = self.assert_downloads(key, body)
        self.assertEqual(headers.get("content-type"), "text/csv", "Content-Type of the uploaded object")
        self.assertEqual(headers.get("x-amz-meta-owner"), "py", "x-amz-meta-owner of the uploaded object")

        # Create-only: a second grant for the same key is issued, but the store refuses it.
        again = self.grant_write(key, **self.put_pins(body))
        put = refused(lambda: upload(again, body, timeout=HTTP_TIMEOUT_S))
        self.assertEqual(put.status, 412, f"create-only PUT over an existing object: HTTP {put.status} ({put.s3_code})")
        self.assert_downloads(key, body)

    def test_grant_write_put_with_another_content_type_is_refused(self) -> None:
        key = f"{self.PUT_KEY_DIR}/py-upload-wrong-type.csv"
        body = self.PUT_BODY
        response = self.grant_write(key, **self.put_pins(body))
        self.assertIn("content-type", response.headers, f"the grant's headers {sorted(response.headers)} lack content-type")
        tampered = pb2.GrantWriteResponse()
        tampered.CopyFrom(response)
        tampered.headers["content-type"] = "application/json"
        put = refused(lambda: upload(tampered, body, timeout=HTTP_TIMEOUT_S))
        self.assertEqual(put.status, 403, f"PUT with another Content-Type than pinned: HTTP {put.status} ({put.s3_code})")
        self.assert_absent(key)

    # -- GrantWrite: presigned POST form ----------------------------------------------------

    FORM_RANGE = (1, 100)

    def grant_form(self, key: str) -> pb2.GrantWriteResponse:
        return self.grant_write(key, content_length_range=self.FORM_RANGE)

    def post_form(self, response: pb2.GrantWriteResponse, filename: str, content: bytes) -> HttpResponse:
        return refused(lambda: upload(response, content, filename=filename, timeout=HTTP_TIMEOUT_S))

    def test_grant_write_post_form_uploads_and_reads_back(self) -> None:
        key = f"{self.PUT_KEY_DIR}/py-form.csv"
        content = b"id,via\n1,browser form\n"
        before = time.time()
        response = self.grant_form(key)
        after = time.time()

        self.assertTrue(response.url.startswith(("http://", "https://")), "url is empty or not http(s)")
        self.assertEqual(response.method, "POST")
        self.assertFalse(response.headers, f"a POST grant has no headers, got {sorted(response.headers)}")
        self.assertTrue(response.file_field, "file_field is empty")
        self.assertNotIn(response.file_field, response.form_fields, "the file field is also a form field")
        fields = {name.lower(): value for name, value in response.form_fields.items()}
        for name in ("key", "policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature"):
            self.assertIn(name, fields, f"form fields {sorted(response.form_fields)} lack {name}")
        self.assertEqual(fields["key"], key, "the form's key field")
        self.assertTrue(response.grant_id, "grant_id is empty")
        self.assertTrue(response.HasField("expires_at"), "expires_at is unset")
        self.assert_expiry(response.expires_at, before, after, 60, "GrantWrite POST")

        posted = self.post_form(response, "py-form.csv", content)
        self.assertIn(posted.status, (200, 204), f"POST form upload: HTTP {posted.status} ({posted.s3_code})")
        self.assert_downloads(key, content)

    def test_grant_write_with_a_length_and_a_range_is_refused_by_the_client(self) -> None:
        # The proto's oneof would keep the last one set, dropping the exact length.
        with self.assertRaisesRegex(ValueError, "content_length and content_length_range are exclusive"):
            self.grant_write(f"{self.PUT_KEY_DIR}/both.txt", content_length=3, content_length_range=(1, 10))

    def test_grant_write_post_form_over_the_range_is_refused(self) -> None:
        key = f"{self.PUT_KEY_DIR}/py-form-too-big.csv"
        content = b"x" * (self.FORM_RANGE[1] + 1)
        posted = self.post_form(self.grant_form(key), "py-form-too-big.csv", content)
        self.assertIn(
            posted.status, (400, 403), f"POST of {len(content)} bytes over a 1-100 range: HTTP {posted.status} ({posted.s3_code})"
        )
        self.assert_absent(key)

    # -- GrantWrite: rules and validation -----------------------------------------------------

    def test_grant_write_outside_rules_is_permission_denied(self) -> None:
        request = pb2.GrantWriteRequest(bucket=ENV["DEMO_BUCKET"], key=ENV["DENIED_KEY"], content_type="text/plain")
        self.expect_error(self.client.grant_write, request, grpc.StatusCode.PERMISSION_DENIED)

    def test_grant_write_bad_checksum_is_invalid_argument_with_field_violation(self) -> None:
        request = pb2.GrantWriteRequest(
            bucket=ENV["DEMO_BUCKET"], key=f"{self.PUT_KEY_DIR}/py-bad-checksum.csv", checksum_sha256="not base64 sha256"
        )
        self.expect_bad_request(request, "checksum_sha256", call=self.client.grant_write)

    # -- AssumeScoped ------------------------------------------------------------------------

    SCOPED_PREFIX = ENV["DEMO_KEY"].rsplit("/", 1)[0] + "/"
    DENIED_PREFIX = ENV["DENIED_KEY"].rsplit("/", 1)[0] + "/"

    def test_assume_scoped_credentials_work_with_boto3(self) -> None:
        prefix = self.SCOPED_PREFIX
        before = time.time()
        response = self.assume_scoped(prefix=prefix, access=pb2.ACCESS_READ_WRITE, list=True)
        after = time.time()

        credentials = response.credentials
        for name in ("access_key_id", "secret_access_key", "session_token"):
            self.assertTrue(getattr(credentials, name), f"credentials.{name} is empty")
        self.assertTrue(credentials.HasField("expires_at"), "credentials.expires_at is unset")
        self.assert_expiry(credentials.expires_at, before, after, SCOPED_MAX_S, "AssumeScoped")
        self.assertEqual(response.bucket, ENV["DEMO_BUCKET"])
        self.assertEqual(response.prefix, prefix)
        self.assertTrue(response.region, "region is empty")
        self.assertTrue(response.grant_id, "grant_id is empty")

        # An S3 SDK configured from the response alone, by the package.
        s3 = s3_client(
            response,
            config=botocore.config.Config(
                retries={"max_attempts": 1},
                connect_timeout=HTTP_TIMEOUT_S,
                read_timeout=HTTP_TIMEOUT_S,
            ),
        )
        key = f"{response.prefix}py-scoped-{secrets.token_hex(4)}.txt"
        content = b"written with AssumeScoped credentials from python\n"

        def s3_call(operation: str, **params: Any) -> Any:
            try:
                return getattr(s3, operation)(Bucket=response.bucket, **params)
            except botocore.exceptions.ClientError as err:
                code = err.response.get("Error", {}).get("Code", "?")
                status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
                raise AssertionError(f"{operation} with the scoped credentials: HTTP {status} ({code})") from None
            except botocore.exceptions.BotoCoreError as err:
                raise AssertionError(f"{operation} with the scoped credentials: {type(err).__name__}") from None

        s3_call("put_object", Key=key, Body=content)
        got = s3_call("get_object", Key=key)["Body"].read()
        self.assert_same_bytes(got, content, "get_object of the object put_object wrote")
        listed = s3_call("list_objects_v2", Prefix=prefix)
        keys = [item["Key"] for item in listed.get("Contents", [])]
        self.assertIn(key, keys, f"list_objects_v2(Prefix={prefix!r}) lists {len(keys)} keys, not the new one")
        self.assertTrue(all(k.startswith(prefix) for k in keys), "list_objects_v2 listed keys outside the prefix")

    # -- AssumeScoped credentials that refresh themselves ---------------------------------

    # Under the test rule's 15-minute sessions (the longest this scope may have), and
    # close to them, so that credentials a few seconds old no longer qualify and a
    # refresh gets new ones from STS, not the cached ones it replaces.
    REFRESH_MIN_REMAINING = timedelta(seconds=15 * 60 - 5)

    def scoped_s3_config(self) -> botocore.config.Config:
        return botocore.config.Config(
            retries={"max_attempts": 1}, connect_timeout=HTTP_TIMEOUT_S, read_timeout=HTTP_TIMEOUT_S
        )

    def fresh_scope(self, name: str) -> str:
        """A prefix of its own, so that the service's credential cache starts empty for it."""
        return f"{self.SCOPED_PREFIX}{name}-{secrets.token_hex(4)}/"

    def counting_client(self, calls: list[pb2.AssumeScopedRequest]) -> GrantsClient:
        """A GrantsClient on the test channel that records each AssumeScoped request it
        sends (the calls still go to the real service)."""
        real = self.client

        class Counting(GrantsClient):
            def assume_scoped(self, request: Any = None, **kwargs: Any) -> pb2.AssumeScopedResponse:
                calls.append(request)
                return real.assume_scoped(request, **kwargs)

        return Counting(self.channel, token=self.token, timeout=RPC_TIMEOUT_S)

    def test_refresh_windows_follow_botocore_and_min_remaining(self) -> None:
        # Pure logic: 15-minute and 1-minute windows for the default 20 minutes; shorter
        # ones for a shorter min_remaining, so fresh credentials are outside them.
        self.assertEqual(refresh_windows(DEFAULT_MIN_REMAINING), (timedelta(minutes=15), timedelta(minutes=1)))
        self.assertEqual(refresh_windows(timedelta(minutes=10)), (timedelta(minutes=7.5), timedelta(minutes=1)))
        self.assertEqual(refresh_windows(timedelta(minutes=1)), (timedelta(seconds=45), timedelta(seconds=30)))
        for bad in (timedelta(0), timedelta(seconds=-1)):
            with self.assertRaises(ValueError):
                refresh_windows(bad)
        first = self.assume_scoped(prefix=self.SCOPED_PREFIX, access=pb2.ACCESS_READ)
        with self.assertRaises(ValueError):  # refreshable credentials live in a session of their own
            s3_client(first, session=boto3.session.Session(),
                      credentials=botocore.credentials.Credentials("a", "b", "c"))

    def test_refreshing_credentials_call_assume_scoped_again_within_the_refresh_window(self) -> None:
        prefix = self.fresh_scope("py-refresh")
        calls: list[pb2.AssumeScopedRequest] = []
        counting = self.counting_client(calls)
        min_remaining = self.REFRESH_MIN_REMAINING
        first = self.assume_scoped(prefix=prefix, access=pb2.ACCESS_READ_WRITE, list=True, min_remaining=min_remaining)
        credentials = scoped_credentials(
            counting, bucket=ENV["DEMO_BUCKET"], prefix=prefix, access=pb2.ACCESS_READ_WRITE, list=True,
            min_remaining=min_remaining, first=first,
        )
        s3 = s3_client(first, config=self.scoped_s3_config(), credentials=credentials)
        key = f"{prefix}refreshed.txt"

        # Fresh credentials are outside the refresh windows: no call.
        s3.put_object(Bucket=first.bucket, Key=key, Body=b"before")
        self.assertEqual(len(calls), 0, "credentials outside the refresh window were refreshed")
        first_key_id = credentials.get_frozen_credentials().access_key
        self.assertEqual(first_key_id, first.credentials.access_key_id)

        # Wait until the service's cached credentials have less than min_remaining left
        # (a few seconds), so that a refresh gets new ones.
        left = timestamp_seconds(first.credentials.expires_at) - time.time()
        wait = left - min_remaining.total_seconds() + 1.5
        self.assertLess(wait, 15, f"AssumeScoped credentials last {left:.0f}s, longer than the test rule allows")
        time.sleep(max(0.0, wait))

        # botocore's clock moved to one minute before expiry: inside both windows (the
        # mandatory one raises a failed refresh), so the next S3 call refreshes first.
        real_clock = credentials._time_fetcher
        shift = timedelta(seconds=timestamp_seconds(first.credentials.expires_at) - time.time() - 60)
        credentials._time_fetcher = lambda: real_clock() + shift
        try:
            s3.list_objects_v2(Bucket=first.bucket, Prefix=prefix)
        finally:
            credentials._time_fetcher = real_clock
        self.assertEqual(len(calls), 1, f"AssumeScoped was called {len(calls)} times by the refresh, expected once")
        asked = calls[0]
        self.assertEqual((asked.bucket, asked.prefix, asked.access, asked.list),
                         (ENV["DEMO_BUCKET"], prefix, pb2.ACCESS_READ_WRITE, True))
        self.assertEqual(asked.min_remaining.ToTimedelta(), min_remaining, "the refresh did not ask for min_remaining")
        frozen = credentials.get_frozen_credentials()
        self.assertNotEqual(frozen.access_key, first_key_id, "the refresh kept the credentials it replaces")
        self.assertEqual(len(calls), 1, "the refreshed credentials were refreshed again")

        # The S3 calls go on with the new credentials (signed with them), and refresh no more.
        s3.put_object(Bucket=first.bucket, Key=key, Body=b"after")
        self.assert_same_bytes(s3.get_object(Bucket=first.bucket, Key=key)["Body"].read(), b"after",
                               "get_object after the refresh")
        listed = s3.list_objects_v2(Bucket=first.bucket, Prefix=prefix)
        self.assertEqual([item["Key"] for item in listed.get("Contents", [])], [key])
        self.assertEqual(len(calls), 1, "fresh credentials were refreshed again")

    def test_scoped_s3_client_asks_with_min_remaining_and_works(self) -> None:
        prefix = self.fresh_scope("py-scoped-client")
        calls: list[pb2.AssumeScopedRequest] = []
        counting = self.counting_client(calls)
        min_remaining = timedelta(minutes=10)
        s3 = scoped_s3_client(
            counting, bucket=ENV["DEMO_BUCKET"], prefix=prefix, access=pb2.ACCESS_READ_WRITE, list=True,
            min_remaining=min_remaining, config=self.scoped_s3_config(),
        )
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0].min_remaining.ToTimedelta(), min_remaining)
        key = f"{prefix}scoped.txt"
        s3.put_object(Bucket=ENV["DEMO_BUCKET"], Key=key, Body=b"scoped")
        self.assert_same_bytes(s3.get_object(Bucket=ENV["DEMO_BUCKET"], Key=key)["Body"].read(), b"scoped",
                               "get_object with scoped_s3_client")
        self.assertEqual(len(calls), 1, "fresh credentials were refreshed")

        # Without `first`, the credentials call AssumeScoped on first use.
        deferred = scoped_credentials(counting, bucket=ENV["DEMO_BUCKET"], prefix=prefix,
                                      access=pb2.ACCESS_READ_WRITE, list=True, min_remaining=min_remaining)
        self.assertEqual(len(calls), 1)
        self.assertTrue(deferred.get_frozen_credentials().access_key)
        self.assertEqual(len(calls), 2)
        self.assertEqual(calls[1].min_remaining.ToTimedelta(), min_remaining)

    # A refresh while the service hangs: the credentials' client is pointed at a
    # listener that never answers, with a deadline of its own (so that the test stays
    # bounded without the fix too); the S3 calls go to moto with the first answer's
    # credentials.
    HUNG_CLIENT_TIMEOUT_S = 5.0

    def hung_refresh_setup(self, name: str, **options: Any) -> tuple[Any, Any, list[float], Any, Callable[[float], None]]:
        """(s3 client, first answer, AssumeScoped attempt times, credentials, set_clock)
        for refreshing credentials whose service hangs; `set_clock(s)` moves botocore's
        clock to `s` seconds before the credentials' expiry."""
        hung = HungService()
        self.addCleanup(hung.close)
        hung_client = GrantsClient.connect(hung.target, token=self.token, timeout=self.HUNG_CLIENT_TIMEOUT_S)
        self.addCleanup(hung_client.close)
        attempts: list[float] = []

        class Counting(GrantsClient):
            def assume_scoped(self, request: Any = None, **kwargs: Any) -> pb2.AssumeScopedResponse:
                attempts.append(time.monotonic())
                return hung_client.assume_scoped(request, **kwargs)

        counting = Counting(hung_client.channel, token=self.token, timeout=self.HUNG_CLIENT_TIMEOUT_S)
        prefix = self.fresh_scope(name)
        min_remaining = self.REFRESH_MIN_REMAINING  # windows: 11.25 min advisory, 1 min mandatory
        first = self.assume_scoped(prefix=prefix, access=pb2.ACCESS_READ_WRITE, list=True, min_remaining=min_remaining)
        credentials = scoped_credentials(
            counting, bucket=ENV["DEMO_BUCKET"], prefix=prefix, access=pb2.ACCESS_READ_WRITE, list=True,
            min_remaining=min_remaining, first=first, **options,
        )
        s3 = s3_client(first, config=self.scoped_s3_config(), credentials=credentials)
        real_clock = credentials._time_fetcher
        expires = timestamp_seconds(first.credentials.expires_at)

        def set_clock(before_expiry_s: float) -> None:
            shift = timedelta(seconds=expires - time.time() - before_expiry_s)
            credentials._time_fetcher = lambda: real_clock() + shift

        return s3, first, attempts, credentials, set_clock

    def timed_list(self, s3: Any, first: pb2.AssumeScopedResponse) -> float:
        started = time.monotonic()
        s3.list_objects_v2(Bucket=first.bucket, Prefix=first.prefix)
        return time.monotonic() - started

    def test_a_hung_service_costs_an_early_refresh_a_short_deadline_then_a_backoff(self) -> None:
        s3, first, attempts, credentials, set_clock = self.hung_refresh_setup("py-hung-advisory")
        self.assertLess(self.timed_list(s3, first), 2.0, "a call with fresh credentials was slow")
        self.assertEqual(attempts, [], "fresh credentials were refreshed")

        # Nine minutes before expiry: the advisory window (11.25 min), outside the
        # mandatory one (the last minute). The S3 call refreshes, the service hangs: the refresh
        # gives up after the short deadline and the call goes on with the current ones.
        set_clock(9 * 60)
        took = self.timed_list(s3, first)
        self.assertEqual(len(attempts), 1, f"{len(attempts)} AssumeScoped attempts for one S3 call")
        bound = EARLY_REFRESH_TIMEOUT.total_seconds() + 1.5
        self.assertLess(took, bound, f"the S3 call waited {took:.1f}s for a refresh its credentials did not need "
                                     f"(the client's deadline is {self.HUNG_CLIENT_TIMEOUT_S:.0f}s)")
        self.assertGreaterEqual(took, EARLY_REFRESH_TIMEOUT.total_seconds() - 0.5, "the refresh did not wait for the service")
        self.assertEqual(credentials.get_frozen_credentials().access_key, first.credentials.access_key_id)

        # Within the back-off: no further attempt, no wait.
        for _ in range(2):
            took = self.timed_list(s3, first)
            self.assertLess(took, 1.5, f"an S3 call within the back-off waited {took:.1f}s")
        self.assertEqual(len(attempts), 1, "AssumeScoped was called again within the back-off")

        # Five minutes before expiry, still advisory: the current credentials go on
        # (botocore's own mandatory window began at 10 minutes).
        set_clock(5 * 60)
        self.assertLess(self.timed_list(s3, first), 1.5)
        self.assertEqual(len(attempts), 1, "AssumeScoped was called again within the back-off")
        # The mandatory window, the last minute: the call asks with the client's full
        # deadline and raises the failure.
        set_clock(30)
        started = time.monotonic()
        with self.assertRaises(grpc.RpcError) as raised:
            s3.list_objects_v2(Bucket=first.bucket, Prefix=first.prefix)
        took = time.monotonic() - started
        self.assertEqual(raised.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(len(attempts), 2, "the mandatory window did not ask again")
        self.assertGreaterEqual(took, self.HUNG_CLIENT_TIMEOUT_S - 0.5, "the mandatory refresh had a short deadline")

    def test_after_the_backoff_an_early_refresh_asks_again(self) -> None:
        s3, first, attempts, _credentials, set_clock = self.hung_refresh_setup(
            "py-hung-backoff", early_refresh_timeout=timedelta(seconds=1), failure_backoff=timedelta(seconds=1.5)
        )
        set_clock(9 * 60)
        took = self.timed_list(s3, first)
        self.assertLess(took, 2.5, f"the S3 call waited {took:.1f}s, more than early_refresh_timeout (1s)")
        self.assertEqual(len(attempts), 1)
        self.timed_list(s3, first)
        self.assertEqual(len(attempts), 1, "AssumeScoped was called again within the back-off")
        time.sleep(1.6)
        self.timed_list(s3, first)
        self.assertEqual(len(attempts), 2, "AssumeScoped was not called again after the back-off")

    def test_assume_scoped_prefix_without_slash_is_invalid_argument(self) -> None:
        request = pb2.AssumeScopedRequest(
            bucket=ENV["DEMO_BUCKET"], prefix=self.SCOPED_PREFIX.rstrip("/"), access=pb2.ACCESS_READ
        )
        self.expect_bad_request(request, "prefix", call=self.client.assume_scoped)

    def test_assume_scoped_outside_rules_is_permission_denied(self) -> None:
        request = pb2.AssumeScopedRequest(bucket=ENV["DEMO_BUCKET"], prefix=self.DENIED_PREFIX, access=pb2.ACCESS_READ)
        self.expect_error(self.client.assume_scoped, request, grpc.StatusCode.PERMISSION_DENIED)

    # -- multipart upload ----------------------------------------------------------------

    PART_BYTES = 5 * 1024 * 1024  # S3's smallest part, but for the last

    def multipart_key(self, name: str) -> str:
        # A fresh key per run: the rule allows `write` under the demo key's folder.
        return f"{self.PUT_KEY_DIR}/py-{name}-{secrets.token_hex(4)}.bin"

    def test_multipart_upload_with_the_client(self) -> None:
        """GrantsClient: start with a content type, grant pinned parts, PUT each with the
        package's `upload`, list, complete with the ETags the PUTs answered, read back."""
        key = self.multipart_key("multipart")
        bodies = [os.urandom(self.PART_BYTES), os.urandom(self.PART_BYTES), os.urandom(1234)]
        content_type = "application/x-storage-grants-test"
        before = time.time()
        started = self.client.start_multipart_upload(
            bucket=ENV["DEMO_BUCKET"], key=key, content_type=content_type, ttl=timedelta(minutes=10)
        )
        after = time.time()
        self.assertTrue(started.upload, "upload token is empty")
        self.assertTrue(started.upload_id, "upload_id is empty")
        self.assertTrue(started.grant_id, "grant_id is empty")
        self.assertTrue(started.HasField("expires_at"), "expires_at is unset")
        self.assert_expiry(started.expires_at, before, after, 600, "StartMultipartUpload")

        try:
            granted = self.client.grant_upload_parts(
                upload=started.upload,
                parts=[{"part_number": n, "content_length": len(body)} for n, body in enumerate(bodies, 1)],
                ttl=timedelta(minutes=2),
            )
            self.assertEqual([p.part_number for p in granted.parts], [1, 2, 3], "part grants, in the order asked")
            self.assertTrue(granted.grant_id, "grant_id is empty")
            self.assertTrue(granted.HasField("expires_at"), "expires_at is unset")
            self.assertLessEqual(
                timestamp_seconds(granted.expires_at),
                timestamp_seconds(started.expires_at),
                "part URLs outlive the upload token",
            )

            etags = []
            for part, body in zip(granted.parts, bodies):
                self.assertTrue(part.url.startswith(("http://", "https://")), f"part {part.part_number}: url is not http(s)")
                self.assertEqual(part.method, "PUT", f"part {part.part_number}")
                put = refused(lambda: upload(part, body, timeout=HTTP_TIMEOUT_S))
                self.assertEqual(put.status, 200, f"part {part.part_number}: HTTP {put.status} ({put.s3_code})")
                self.assertTrue(put.etag, f"part {part.part_number}: the store answered no ETag")
                etags.append(put.etag)

            # s3s-fs lists parts without ETags: only numbers and sizes are compared.
            listed = self.client.list_uploaded_parts(upload=started.upload)
            self.assertEqual(
                [(p.part_number, p.size) for p in listed.parts],
                [(n, len(body)) for n, body in enumerate(bodies, 1)],
                "ListUploadedParts (part number, size)",
            )

            done = self.client.complete_multipart_upload(
                upload=started.upload,
                parts=[{"part_number": n, "etag": etag} for n, etag in enumerate(etags, 1)],
            )
        except BaseException:
            self.client.abort_multipart_upload(upload=started.upload)
            raise
        self.assertEqual(done.bucket, ENV["DEMO_BUCKET"])
        self.assertEqual(done.key, key)
        self.assertEqual(done.size, sum(len(body) for body in bodies))
        self.assertTrue(done.etag, "the completed object's etag is empty")
        self.assertTrue(done.grant_id, "grant_id is empty")

        headers = self.assert_downloads(key, b"".join(bodies))
        self.assertEqual(headers.get("content-type"), content_type, "Content-Type of the completed object")

    def test_multipart_abort_discards_the_upload(self) -> None:
        key = self.multipart_key("multipart-aborted")
        body = os.urandom(1024)
        started = self.client.start_multipart_upload(bucket=ENV["DEMO_BUCKET"], key=key, content_type="text/plain")
        granted = self.client.grant_upload_parts(upload=started.upload, part_range=(1, 1))
        self.assertEqual([p.part_number for p in granted.parts], [1])
        (part,) = granted.parts
        put = refused(lambda: upload(part, body, timeout=HTTP_TIMEOUT_S))
        self.assertEqual(put.status, 200, f"part 1: HTTP {put.status} ({put.s3_code})")
        self.assertTrue(put.etag, "part 1: the store answered no ETag")
        listed = self.client.list_uploaded_parts(upload=started.upload)
        self.assertEqual([(p.part_number, p.size) for p in listed.parts], [(1, len(body))], "parts before the abort")

        self.client.abort_multipart_upload(upload=started.upload)

        # The upload is gone. S3 answers NoSuchUpload for it (FAILED_PRECONDITION from
        # the service); s3s-fs lists an unknown upload as one without parts.
        try:
            listed = self.client.list_uploaded_parts(upload=started.upload)
            self.assertEqual([p.part_number for p in listed.parts], [], "parts listed after the abort")
        except grpc.RpcError as err:
            self.assertEqual(err.code(), grpc.StatusCode.FAILED_PRECONDITION, f"listing after the abort: {err.details()!r}")
        self.expect_error(
            self.client.complete_multipart_upload,
            pb2.CompleteMultipartUploadRequest(
                upload=started.upload, parts=[pb2.CompletedPart(part_number=1, etag=put.etag)]
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        # The part URL no longer uploads: S3 answers 404 NoSuchUpload, s3s-fs 403.
        again = refused(lambda: upload(part, body, timeout=HTTP_TIMEOUT_S))
        self.assertIn(again.status, (403, 404), f"part PUT after the abort: HTTP {again.status} ({again.s3_code})")
        # Not checked here: that aborting it again succeeds. s3s-fs answers AccessDenied,
        # not NoSuchUpload, for an upload it no longer has, which the service reports
        # as INTERNAL.
        self.assert_absent(key)

    def test_multipart_upload_through_the_generated_stubs(self) -> None:
        """StartMultipartUpload, GrantUploadParts, plain-HTTP part PUTs, ListUploadedParts,
        CompleteMultipartUpload, then the object reads back whole."""
        stub = self.client.stub
        metadata = self.client.request_metadata()
        key = f"{self.PUT_KEY_DIR}/py-multipart-{secrets.token_hex(4)}.bin"
        first, last = os.urandom(5 * 1024 * 1024), os.urandom(1024)
        started = stub.StartMultipartUpload(
            pb2.StartMultipartUploadRequest(bucket=ENV["DEMO_BUCKET"], key=key, content_type="application/octet-stream"),
            timeout=RPC_TIMEOUT_S,
            metadata=metadata,
        )
        self.assertTrue(started.upload and started.upload_id, "StartMultipartUpload answered no token or upload id")
        granted = stub.GrantUploadParts(
            pb2.GrantUploadPartsRequest(
                upload=started.upload,
                parts=[
                    pb2.UploadPartRequest(part_number=1, content_length=len(first)),
                    pb2.UploadPartRequest(part_number=2, content_length=len(last)),
                ],
            ),
            timeout=RPC_TIMEOUT_S,
            metadata=metadata,
        )
        self.assertEqual([p.part_number for p in granted.parts], [1, 2])
        etags = []
        for part, body in zip(granted.parts, (first, last)):
            self.assertEqual(part.method, "PUT")
            headers = {k: v for k, v in part.headers.items() if k != "content-length"}
            put = send("PUT", part.url, headers, body, timeout=HTTP_TIMEOUT_S)
            self.assertEqual(put.status, 200, f"part {part.part_number}: HTTP {put.status} ({put.s3_code})")
            etags.append(put.headers["etag"].strip('"'))
        listed = stub.ListUploadedParts(
            pb2.ListUploadedPartsRequest(upload=started.upload), timeout=RPC_TIMEOUT_S, metadata=metadata
        )
        self.assertEqual([(p.part_number, p.size) for p in listed.parts], [(1, len(first)), (2, len(last))])
        done = stub.CompleteMultipartUpload(
            pb2.CompleteMultipartUploadRequest(
                upload=started.upload,
                parts=[pb2.CompletedPart(part_number=n + 1, etag=e) for n, e in enumerate(etags)],
            ),
            timeout=RPC_TIMEOUT_S,
            metadata=metadata,
        )
        self.assertEqual(done.size, len(first) + len(last))
        self.assertEqual(done.key, key)
        self.assert_downloads(key, first + last)
        # The token is the caller's: a call without identity is refused before the store.
        self.expect_error(
            self.anonymous.stub.AbortMultipartUpload,
            pb2.AbortMultipartUploadRequest(upload=started.upload),
            grpc.StatusCode.UNAUTHENTICATED,
        )

    # -- the package ---------------------------------------------------------------------

    def run_python(self, code: str) -> subprocess.CompletedProcess:
        """Runs `code` in a fresh interpreter, beside this file as the test runs, so
        `storagegrants` is the installed package and nothing is imported yet."""
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_import_storagegrants_exposes_s3_on_first_use(self) -> None:
        # `import storagegrants` then `storagegrants.s3.s3_client(...)`, as the root README does.
        got = self.run_python(
            "import sys\n"
            "import storagegrants\n"
            "assert 'boto3' not in sys.modules, 'import storagegrants imported boto3'\n"
            "assert callable(storagegrants.s3.s3_client)\n"
        )
        self.assertEqual(got.returncode, 0, f"storagegrants.s3 after import storagegrants:\n{got.stderr}")

    def test_import_storagegrants_works_without_boto3(self) -> None:
        # boto3 is the optional `s3` extra: without it only storagegrants.s3 fails, saying so.
        got = self.run_python(
            "import sys\n"
            "sys.modules['boto3'] = None  # as if it were not installed\n"
            "import storagegrants\n"
            "from storagegrants import GrantsClient, upload\n"
            "try:\n"
            "    storagegrants.s3\n"
            "except ModuleNotFoundError as err:\n"
            "    assert \"storage-grants-client[s3]\" in str(err), str(err)\n"
            "else:\n"
            "    raise AssertionError('storagegrants.s3 imported without boto3')\n"
        )
        self.assertEqual(got.returncode, 0, f"import storagegrants without boto3:\n{got.stderr}")


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
        f"(server {ENV['SG_TEST_ADDR']})"
    )
    for name in not_passed:
        print(f"  not passed: {name}")
    print(f"python: {passed} passed, {len(not_passed)} failed")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
