/**
 * Calls a running storage-grants service the way a Node service would, through this
 * package, and uses every grant for real: GrantRead URLs download over HTTP, GrantWrite
 * uploads land in the store (and a pin that does not match is refused by it), multipart
 * uploads complete from parts uploaded with `upload()`, and AssumeScoped credentials
 * work with @aws-sdk/client-s3. Errors are checked by gRPC
 * code and `google.rpc.BadRequest` field violations.
 *
 * Presigned URLs and credentials are bearer credentials: no assertion message here
 * shows one; failures report statuses, S3 error codes, lengths and names only.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { before, describe, mock, test } from "node:test";

import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from "@aws-sdk/client-s3";

import {
  Access,
  Code,
  ConnectError,
  createGrantsClient,
  download,
  fieldViolations,
  GrantedRequestError,
  grpcCode,
  timestampDate,
  ttl,
  upload,
  type AssumeScopedInit,
  type GrantsClient,
  type GrantWriteInit,
} from "../src/index.js";
import {
  EARLY_REFRESH_TIMEOUT_MS,
  KEEP_ON_FAILURE_MS,
  s3ClientFromAssumeScoped,
  scopedCredentials,
  scopedS3Client,
} from "../src/s3.js";
import { readEnv } from "./env.js";

const env = readEnv();
const BASE_URL = `http://${env.SG_TEST_ADDR}`;
const READY_TIMEOUT_MS = 10_000;
const CLOCK_SLACK_MS = 2_000; // expires_at is computed on the server, to the second
// AssumeScoped: the test rule's max TTL is 15 minutes (STS's minimum too).
const SCOPED_MAX_MS = (15 * 60 + 60) * 1000;

const folder = env.DEMO_KEY.slice(0, env.DEMO_KEY.lastIndexOf("/"));
const scopedPrefix = `${folder}/`;
const deniedPrefix = env.DENIED_KEY.slice(0, env.DENIED_KEY.lastIndexOf("/") + 1);

const client: GrantsClient = createGrantsClient({ baseUrl: BASE_URL, token: env.SG_TEST_TOKEN });

function sha256Base64(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("base64");
}

function shortDigest(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex").slice(0, 12);
}

function assertSameBytes(got: Uint8Array, expected: Uint8Array, what: string): void {
  assert.ok(
    Buffer.from(got).equals(Buffer.from(expected)),
    `${what}: got ${got.length} bytes (sha256 ${shortDigest(got)}), expected ${expected.length} (sha256 ${shortDigest(expected)})`,
  );
}

/** `expiresAt` lies after `after` and at most `maxMs` (plus clock slack) after `before`. */
function assertExpiry(expiresAt: Date, before: number, after: number, maxMs: number, what: string): void {
  const expires = expiresAt.getTime();
  assert.ok(expires > after, `${what}: expires_at is ${(after - expires) / 1000}s in the past`);
  assert.ok(
    expires <= before + maxMs + CLOCK_SLACK_MS,
    `${what}: expires_at is ${(expires - before) / 1000}s away, more than ${maxMs / 1000}s`,
  );
}

/** Asserts that `call` fails with `code`; returns the error. */
async function expectCode(call: () => Promise<unknown>, code: Code): Promise<ConnectError> {
  try {
    await call();
  } catch (error) {
    const err = ConnectError.from(error);
    assert.equal(grpcCode(err), code, `expected ${Code[code]}, got ${Code[err.code]}: ${err.rawMessage}`);
    return err;
  }
  assert.fail(`expected ${Code[code]}, but the call succeeded`);
}

/** INVALID_ARGUMENT with a message and a google.rpc.BadRequest violation on `field`. */
async function expectBadRequest(call: () => Promise<unknown>, field: string): Promise<void> {
  const err = await expectCode(call, Code.InvalidArgument);
  assert.ok(err.rawMessage.trim(), "INVALID_ARGUMENT without a message");
  const violations = fieldViolations(err);
  assert.ok(
    violations.length > 0,
    `no google.rpc.BadRequest field violations in details ${JSON.stringify(err.details.map((d) => ("type" in d ? d.type : d.desc.typeName)))}`,
  );
  const fields = violations.map((v) => v.field);
  assert.ok(fields.includes(field), `BadRequest names fields ${JSON.stringify(fields)}, expected ${field}`);
  for (const violation of violations.filter((v) => v.field === field)) {
    assert.ok(violation.description.trim(), `violation on ${field} has an empty description`);
  }
}

async function expectHttpStatus(call: () => Promise<unknown>, statuses: number[], what: string): Promise<void> {
  try {
    await call();
  } catch (error) {
    assert.ok(error instanceof GrantedRequestError, `${what}: ${String(error)}`);
    assert.ok(statuses.includes(error.status), `${what}: HTTP ${error.status} (${error.s3Code ?? "no S3 error code"})`);
    return;
  }
  assert.fail(`${what}: the store accepted it, expected HTTP ${statuses.join(" or ")}`);
}

async function readBack(key: string): Promise<Response> {
  return download(await client.grantRead({ bucket: env.DEMO_BUCKET, key }));
}

async function assertDownloads(key: string, expected: Uint8Array): Promise<Headers> {
  const response = await readBack(key);
  assertSameBytes(new Uint8Array(await response.arrayBuffer()), expected, `reading ${key} back`);
  return response.headers;
}

/** `key` does not exist: a refused upload wrote nothing. */
async function assertAbsent(key: string): Promise<void> {
  await expectHttpStatus(() => readBack(key), [404], `${key} should not exist, reading it`);
}

before(async () => {
  // The service reports UNAVAILABLE until it has reached its store, which may be just
  // after its port opens: wait as a client with a readiness gate would.
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    try {
      await client.grantRead({ bucket: env.DEMO_BUCKET, key: env.DEMO_KEY });
      return;
    } catch (error) {
      if (grpcCode(error) !== Code.Unavailable || Date.now() > deadline) {
        return; // the tests report what is wrong
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
});

describe("GrantRead", () => {
  test("the URL downloads the object over plain HTTP", async () => {
    const start = Date.now();
    const grant = await client.grantRead({ bucket: env.DEMO_BUCKET, key: env.DEMO_KEY, ttl: ttl(60) });
    const end = Date.now();

    assert.match(grant.url, /^https?:\/\//, "url is empty or not http(s)");
    assert.equal(grant.method, "GET");
    assert.deepEqual(Object.keys(grant.headers), [], "a plain GET grant needs no headers");
    assert.ok(grant.grantId, "grant_id is empty");
    assert.ok(grant.expiresAt, "expires_at is unset");
    assertExpiry(timestampDate(grant.expiresAt), start, end, 60_000, "GrantRead");

    const response = await download(grant);
    assert.equal(response.status, 200);
    assertSameBytes(new Uint8Array(await response.arrayBuffer()), Buffer.from(env.DEMO_CONTENT), "download");
  });

  test("response header overrides are applied by the store", async () => {
    const contentType = "text/x-storage-grants-test; charset=utf-8";
    const disposition = 'attachment; filename="hello from node.txt"';
    const grant = await client.grantRead({
      bucket: env.DEMO_BUCKET,
      key: env.DEMO_KEY,
      responseContentType: contentType,
      responseContentDisposition: disposition,
    });
    const response = await download(grant);
    assert.equal(response.headers.get("content-type"), contentType, "Content-Type override");
    assert.equal(response.headers.get("content-disposition"), disposition, "Content-Disposition override");
    assert.equal((await response.arrayBuffer()).byteLength, Buffer.byteLength(env.DEMO_CONTENT));
  });
});

describe("GrantWrite, presigned PUT", () => {
  const body = new TextEncoder().encode("id,owner,amount\n1,node,42\n2,node,7\n");
  const pins = (key: string): GrantWriteInit => ({
    bucket: env.DEMO_BUCKET,
    key,
    ttl: ttl(60),
    contentType: "text/csv",
    size: { case: "contentLength", value: BigInt(body.length) },
    checksumSha256: sha256Base64(body),
    metadata: { owner: "node" },
    createOnly: true,
  });

  test("uploads with every pin, reads back, and create-only refuses a second upload", async () => {
    const key = `${folder}/node-upload.csv`;
    const start = Date.now();
    const grant = await client.grantWrite(pins(key));
    const end = Date.now();

    assert.match(grant.url, /^https?:\/\//, "url is empty or not http(s)");
    assert.equal(grant.method, "PUT");
    assert.deepEqual(Object.keys(grant.formFields), [], "a PUT grant has no form fields");
    assert.equal(grant.fileField, "", "a PUT grant has no file field");
    assert.ok(grant.grantId, "grant_id is empty");
    assert.ok(grant.expiresAt, "expires_at is unset");
    assertExpiry(timestampDate(grant.expiresAt), start, end, 60_000, "GrantWrite PUT");
    const names = Object.keys(grant.headers).sort();
    assert.deepEqual(names, names.map((n) => n.toLowerCase()), "header names are lowercase");
    for (const [name, value] of [
      ["content-type", "text/csv"],
      ["x-amz-meta-owner", "node"],
      ["x-amz-checksum-sha256", sha256Base64(body)],
      ["if-none-match", "*"],
    ] as const) {
      assert.equal(grant.headers[name], value, `header ${name} of the grant (headers: ${names.join(", ")})`);
    }

    const response = await upload(grant, body);
    assert.equal(response.status, 200, "PUT with the granted headers");

    const headers = await assertDownloads(key, body);
    assert.equal(headers.get("content-type"), "text/csv", "Content-Type of the uploaded object");
    assert.equal(headers.get("x-amz-meta-owner"), "node", "x-amz-meta-owner of the uploaded object");

    // Create-only: a second grant is issued, but the store refuses the upload.
    const again = await client.grantWrite(pins(key));
    await expectHttpStatus(() => upload(again, body), [412], "create-only PUT over an existing object");
    await assertDownloads(key, body);
  });

  test("an upload with another Content-Type than pinned is refused by the store", async () => {
    const key = `${folder}/node-upload-wrong-type.csv`;
    const grant = await client.grantWrite(pins(key));
    assert.ok(grant.headers["content-type"], "the grant pins no content-type");
    const tampered = { ...grant, headers: { ...grant.headers, "content-type": "application/json" } };
    await expectHttpStatus(() => upload(tampered, body), [403], "PUT with another Content-Type than pinned");
    await assertAbsent(key);
  });

  test("a body of another size than pinned is not sent", async () => {
    const grant = await client.grantWrite(pins(`${folder}/node-upload-wrong-size.csv`));
    await assert.rejects(() => upload(grant, new Uint8Array(body.length + 1)), RangeError);
  });
});

describe("GrantWrite, presigned POST form", () => {
  const range = { minBytes: 1n, maxBytes: 100n };
  const grantForm = (key: string) =>
    client.grantWrite({ bucket: env.DEMO_BUCKET, key, ttl: ttl(60), size: { case: "contentLengthRange", value: range } });

  test("uploads a form within the size range, and reads back", async () => {
    const key = `${folder}/node-form.csv`;
    const content = new TextEncoder().encode("id,via\n1,node form\n");
    const start = Date.now();
    const grant = await grantForm(key);
    const end = Date.now();

    assert.match(grant.url, /^https?:\/\//, "url is empty or not http(s)");
    assert.equal(grant.method, "POST");
    assert.deepEqual(Object.keys(grant.headers), [], "a POST grant has no headers");
    assert.ok(grant.fileField, "file_field is empty");
    assert.ok(!(grant.fileField in grant.formFields), "the file field is also a form field");
    const fields = Object.fromEntries(Object.entries(grant.formFields).map(([n, v]) => [n.toLowerCase(), v]));
    for (const name of ["key", "policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature"]) {
      assert.ok(name in fields, `form fields ${Object.keys(grant.formFields).join(", ")} lack ${name}`);
    }
    assert.equal(fields["key"], key, "the form's key field");
    assert.ok(grant.grantId, "grant_id is empty");
    assert.ok(grant.expiresAt, "expires_at is unset");
    assertExpiry(timestampDate(grant.expiresAt), start, end, 60_000, "GrantWrite POST");

    const response = await upload(grant, content);
    assert.ok([200, 204].includes(response.status), `POST form upload: HTTP ${response.status}`);
    await assertDownloads(key, content);
  });

  test("a form over the size range is refused by the store", async () => {
    const key = `${folder}/node-form-too-big.csv`;
    const content = new Uint8Array(Number(range.maxBytes) + 1).fill(0x78);
    const grant = await grantForm(key);
    await expectHttpStatus(() => upload(grant, content), [400, 403], `POST of ${content.length} bytes over a 1-100 range`);
    await assertAbsent(key);
  });
});

describe("AssumeScoped", () => {
  test("the credentials work with @aws-sdk/client-s3: put, get and list in the prefix", async () => {
    const start = Date.now();
    const scoped = await client.assumeScoped({
      bucket: env.DEMO_BUCKET,
      prefix: scopedPrefix,
      access: Access.READ_WRITE,
      list: true,
    });
    const end = Date.now();

    const credentials = scoped.credentials;
    assert.ok(credentials, "credentials are unset");
    for (const name of ["accessKeyId", "secretAccessKey", "sessionToken"] as const) {
      assert.ok(credentials[name], `credentials.${name} is empty`);
    }
    assert.ok(credentials.expiresAt, "credentials.expires_at is unset");
    assertExpiry(timestampDate(credentials.expiresAt), start, end, SCOPED_MAX_MS, "AssumeScoped");
    assert.equal(scoped.bucket, env.DEMO_BUCKET);
    assert.equal(scoped.prefix, scopedPrefix);
    assert.ok(scoped.region, "region is empty");
    assert.ok(scoped.grantId, "grant_id is empty");

    // Configured from the answer alone (the script runs this with no AWS_* variables
    // and empty AWS config files).
    const s3 = s3ClientFromAssumeScoped(scoped, { maxAttempts: 1 });
    const s3Call = async <T>(operation: string, call: () => Promise<T>): Promise<T> => {
      try {
        return await call();
      } catch (error) {
        const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
        assert.fail(`${operation} with the scoped credentials: HTTP ${e.$metadata?.httpStatusCode ?? "?"} (${e.name})`);
      }
    };
    try {
      const key = `${scoped.prefix}node-scoped-${randomBytes(4).toString("hex")}.txt`;
      const content = new TextEncoder().encode("written with AssumeScoped credentials from node\n");
      await s3Call("PutObject", () => s3.send(new PutObjectCommand({ Bucket: scoped.bucket, Key: key, Body: content })));
      const got = await s3Call("GetObject", () => s3.send(new GetObjectCommand({ Bucket: scoped.bucket, Key: key })));
      assert.ok(got.Body, "GetObject returned no body");
      assertSameBytes(await got.Body.transformToByteArray(), content, "GetObject of the object PutObject wrote");
      const listed = await s3Call("ListObjectsV2", () =>
        s3.send(new ListObjectsV2Command({ Bucket: scoped.bucket, Prefix: scoped.prefix })),
      );
      const keys = (listed.Contents ?? []).map((item) => item.Key ?? "");
      assert.ok(keys.includes(key), `ListObjectsV2(Prefix=${scoped.prefix}) lists ${keys.length} keys, not the new one`);
      assert.ok(keys.every((k) => k.startsWith(scoped.prefix)), "ListObjectsV2 listed keys outside the prefix");
    } finally {
      s3.destroy();
    }
  });
});

describe("AssumeScoped credentials that refresh themselves", () => {
  // Under the test rule's 15-minute sessions (the longest this scope may have), and
  // close to them, so that credentials a few seconds old no longer qualify and a
  // refresh gets new ones from STS, not the cached ones it replaces.
  const REFRESH_MIN_REMAINING_MS = (15 * 60 - 5) * 1000;
  const freshScope = (name: string) => `${scopedPrefix}${name}-${randomBytes(4).toString("hex")}/`;

  /** A client that records each AssumeScoped request (the calls still go to the service). */
  function counting(calls: AssumeScopedInit[], onCall = () => {}): Pick<GrantsClient, "assumeScoped"> {
    return {
      assumeScoped: (request, options) => {
        calls.push(request);
        onCall();
        return client.assumeScoped(request, options);
      },
    };
  }

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  test("the SDK calls AssumeScoped again within its refresh window, and S3 calls go on with the new credentials", async () => {
    const prefix = freshScope("node-refresh");
    const request = { bucket: env.DEMO_BUCKET, prefix, access: Access.READ_WRITE, list: true };
    const first = await client.assumeScoped({ ...request, minRemaining: ttl(REFRESH_MIN_REMAINING_MS / 1000) });
    assert.ok(first.credentials?.expiresAt, "credentials.expires_at is unset");
    const expiresAt = timestampDate(first.credentials.expiresAt).getTime();
    const calls: AssumeScopedInit[] = [];
    // The SDK's clock, moved forward below; back to the real one as soon as the SDK
    // asks for new credentials (it checks the clock on every resolution of them).
    let restoreClock = () => {};
    const s3 = s3ClientFromAssumeScoped(first, {
      maxAttempts: 1,
      credentials: scopedCredentials(counting(calls, () => restoreClock()), request, {
        minRemainingMs: REFRESH_MIN_REMAINING_MS,
        first,
      }),
    });
    const key = `${prefix}refreshed.txt`;
    try {
      // Fresh credentials are outside the SDK's 5-minute window: no call.
      await s3.send(new PutObjectCommand({ Bucket: first.bucket, Key: key, Body: "before" }));
      assert.equal(calls.length, 0, "credentials outside the refresh window were refreshed");
      const firstKeyId = (await s3.config.credentials()).accessKeyId;
      assert.equal(firstKeyId, first.credentials.accessKeyId);

      // Wait until the service's cached credentials have less than min_remaining left
      // (a few seconds), so that a refresh gets new ones.
      const wait = expiresAt - Date.now() - REFRESH_MIN_REMAINING_MS + 1500;
      assert.ok(wait < 15_000, `AssumeScoped credentials last longer than the test rule allows`);
      await sleep(Math.max(0, wait));

      // The SDK's clock moved to one minute before expiry: inside its refresh window.
      const realNow = Date.now.bind(Date);
      const shift = expiresAt - realNow() - 60_000;
      const clock = mock.method(Date, "now", () => realNow() + shift);
      restoreClock = () => clock.mock.restore();
      try {
        await s3.send(new ListObjectsV2Command({ Bucket: first.bucket, Prefix: prefix }));
      } finally {
        restoreClock();
      }
      assert.equal(calls.length, 1, `AssumeScoped was called ${calls.length} times by the refresh, expected once`);
      const asked = calls[0];
      assert.ok(asked);
      assert.deepEqual([asked.bucket, asked.prefix, asked.access, asked.list], [env.DEMO_BUCKET, prefix, Access.READ_WRITE, true]);
      assert.equal(asked.minRemaining?.seconds, BigInt(REFRESH_MIN_REMAINING_MS / 1000), "the refresh did not ask for minRemaining");
      const refreshed = await s3.config.credentials();
      assert.notEqual(refreshed.accessKeyId, firstKeyId, "the refresh kept the credentials it replaces");
      assert.ok((refreshed.expiration?.getTime() ?? 0) > expiresAt, "the new credentials do not expire later");

      // The S3 calls go on with the new credentials, and refresh no more.
      await s3.send(new PutObjectCommand({ Bucket: first.bucket, Key: key, Body: "after" }));
      const got = await s3.send(new GetObjectCommand({ Bucket: first.bucket, Key: key }));
      assert.equal(await got.Body?.transformToString(), "after");
      const listed = await s3.send(new ListObjectsV2Command({ Bucket: first.bucket, Prefix: prefix }));
      assert.deepEqual((listed.Contents ?? []).map((item) => item.Key), [key]);
      assert.equal(calls.length, 1, "fresh credentials were refreshed again");
    } finally {
      s3.destroy();
    }
  });

  test("scopedS3Client asks with minRemaining, and the client works", async () => {
    const prefix = freshScope("node-scoped-client");
    const calls: AssumeScopedInit[] = [];
    const s3 = await scopedS3Client(
      counting(calls),
      { bucket: env.DEMO_BUCKET, prefix, access: Access.READ_WRITE, list: true },
      { maxAttempts: 1 },
    );
    try {
      assert.equal(calls.length, 1);
      assert.equal(calls[0]?.minRemaining?.seconds, 600n, "the default minRemaining is 10 minutes");
      const key = `${prefix}scoped.txt`;
      await s3.send(new PutObjectCommand({ Bucket: env.DEMO_BUCKET, Key: key, Body: "scoped" }));
      const got = await s3.send(new GetObjectCommand({ Bucket: env.DEMO_BUCKET, Key: key }));
      assert.equal(await got.Body?.transformToString(), "scoped");
      assert.equal(calls.length, 1, "fresh credentials were refreshed");
    } finally {
      s3.destroy();
    }
  });

  test("a failed refresh keeps credentials that still work, and fails once they are about to expire", async () => {
    // Pure logic: a stand-in for the service that answers once, then UNAVAILABLE.
    const answer = await client.assumeScoped({ bucket: env.DEMO_BUCKET, prefix: scopedPrefix, access: Access.READ });
    let calls = 0;
    const flaky: Pick<GrantsClient, "assumeScoped"> = {
      assumeScoped: async () => {
        calls += 1;
        if (calls === 1) return answer;
        throw new ConnectError("STS down", Code.Unavailable);
      },
    };
    const provider = scopedCredentials(flaky, { bucket: env.DEMO_BUCKET, prefix: scopedPrefix, access: Access.READ });
    const got = await provider();
    assert.equal(got.accessKeyId, answer.credentials?.accessKeyId);
    assert.equal((await provider()).accessKeyId, got.accessKeyId, "a failed refresh did not keep working credentials");
    assert.equal(calls, 2);
    const clock = mock.method(Date, "now", () => got.expiration.getTime() - 30_000);
    try {
      await expectCode(() => provider(), Code.Unavailable);
    } finally {
      clock.mock.restore();
    }
  });

  // A refresh while the service hangs: the provider's client is pointed at a listener
  // that accepts connections and never answers (as a stopped process does), with a
  // deadline of its own so that the test stays bounded without the fix too; the S3
  // commands go to moto with the first answer's credentials.
  const HUNG_CLIENT_TIMEOUT_MS = 5_000;

  /** A loopback TCP listener that accepts connections and never answers; `close` ends it. */
  async function hungService(): Promise<{ url: string; close: () => Promise<void> }> {
    const sockets: Socket[] = [];
    const server: Server = createServer((socket) => {
      sockets.push(socket); // held open, never answered
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    assert.ok(address !== null && typeof address === "object");
    return {
      url: `http://127.0.0.1:${address.port}`,
      close: () =>
        new Promise<void>((resolve) => {
          for (const socket of sockets) socket.destroy();
          server.close(() => resolve());
        }),
    };
  }

  /** A client of the hung service that records the time of each AssumeScoped attempt. */
  function hungClient(url: string, attempts: number[]): Pick<GrantsClient, "assumeScoped"> {
    const hung = createGrantsClient({ baseUrl: url, token: env.SG_TEST_TOKEN, timeoutMs: HUNG_CLIENT_TIMEOUT_MS });
    return {
      assumeScoped: (request, options) => {
        attempts.push(performance.now());
        return hung.assumeScoped(request, options);
      },
    };
  }

  test("while the service hangs, a refresh with a minute or more left costs one short attempt per command, then none", async () => {
    const service = await hungService();
    const prefix = freshScope("node-hung");
    const request = { bucket: env.DEMO_BUCKET, prefix, access: Access.READ_WRITE, list: true };
    const first = await client.assumeScoped({ ...request, minRemaining: ttl(REFRESH_MIN_REMAINING_MS / 1000) });
    assert.ok(first.credentials?.expiresAt, "credentials.expires_at is unset");
    const expiresAt = timestampDate(first.credentials.expiresAt).getTime();
    const attempts: number[] = [];
    const s3 = s3ClientFromAssumeScoped(first, {
      maxAttempts: 1,
      credentials: scopedCredentials(hungClient(service.url, attempts), request, {
        minRemainingMs: REFRESH_MIN_REMAINING_MS,
        first,
      }),
    });
    const list = async (): Promise<number> => {
      const started = performance.now();
      await s3.send(new ListObjectsV2Command({ Bucket: first.bucket, Prefix: prefix }));
      return performance.now() - started;
    };
    const realNow = Date.now.bind(Date);
    let clock: { mock: { restore(): void } } | undefined;
    const setClock = (beforeExpiryMs: number) => {
      clock?.mock.restore();
      const shift = expiresAt - realNow() - beforeExpiryMs;
      clock = mock.method(Date, "now", () => realNow() + shift);
    };
    try {
      await list();
      assert.equal(attempts.length, 0, "fresh credentials were refreshed");

      // Four minutes before expiry: inside the SDK's 5-minute window, more than a minute
      // left. The SDK resolves the credentials twice per command: one attempt, given up
      // after the short deadline, and the command goes on with the current credentials.
      setClock(4 * 60_000);
      let took = await list();
      assert.equal(attempts.length, 1, `${attempts.length} AssumeScoped attempts for one S3 command`);
      assert.ok(
        took < EARLY_REFRESH_TIMEOUT_MS + 1_500,
        `the command waited ${(took / 1000).toFixed(1)}s for a refresh its credentials did not need (the client's deadline is ${HUNG_CLIENT_TIMEOUT_MS / 1000}s)`,
      );
      assert.equal((await s3.config.credentials()).accessKeyId, first.credentials.accessKeyId);

      // Within the back-off: no attempt, no wait.
      for (let i = 0; i < 2; i++) {
        took = await list();
        assert.ok(took < 1_500, `a command within the back-off waited ${(took / 1000).toFixed(1)}s`);
      }
      assert.equal(attempts.length, 1, "AssumeScoped was called again within the back-off");

      // The last minute is as before: the client's full deadline, and the failure thrown.
      setClock(KEEP_ON_FAILURE_MS / 2);
      const started = performance.now();
      await assert.rejects(list(), (error: unknown) => {
        assert.equal(ConnectError.from(error).code, Code.DeadlineExceeded, String(error));
        return true;
      });
      took = performance.now() - started;
      assert.equal(attempts.length, 2, "the last minute did not ask again once");
      assert.ok(took >= HUNG_CLIENT_TIMEOUT_MS - 500, `the last-minute refresh gave up after ${(took / 1000).toFixed(1)}s`);
    } finally {
      clock?.mock.restore();
      s3.destroy();
      await service.close();
    }
  });

  test("concurrent resolutions share one refresh attempt, and asking resumes after the back-off", async () => {
    const service = await hungService();
    const request = { bucket: env.DEMO_BUCKET, prefix: scopedPrefix, access: Access.READ };
    const first = await client.assumeScoped(request);
    const attempts: number[] = [];
    const provider = scopedCredentials(hungClient(service.url, attempts), request, {
      first,
      earlyRefreshTimeoutMs: 1_000,
      failureBackoffMs: 1_500,
    });
    const got = await provider();
    const realNow = Date.now.bind(Date);
    const shift = got.expiration.getTime() - realNow() - 4 * 60_000;
    const clock = mock.method(Date, "now", () => realNow() + shift);
    try {
      const started = performance.now();
      const all = await Promise.all([provider(), provider(), provider()]);
      const took = performance.now() - started;
      assert.equal(attempts.length, 1, `${attempts.length} AssumeScoped attempts for three concurrent resolutions`);
      assert.ok(took < 2_500, `concurrent resolutions waited ${(took / 1000).toFixed(1)}s (earlyRefreshTimeoutMs is 1s)`);
      for (const identity of all) assert.equal(identity.accessKeyId, got.accessKeyId);
      await provider();
      assert.equal(attempts.length, 1, "AssumeScoped was called again within the back-off");
      await new Promise((resolve) => setTimeout(resolve, 1_600));
      assert.equal((await provider()).accessKeyId, got.accessKeyId);
      assert.equal(attempts.length, 2, "AssumeScoped was not called again after the back-off");
    } finally {
      clock.mock.restore();
      await service.close();
    }
  });

  test("s3ClientFromAssumeScoped uses the caller's credentials, and minRemainingMs must exceed the SDK's refresh window", async () => {
    const scoped = await client.assumeScoped({ bucket: env.DEMO_BUCKET, prefix: scopedPrefix, access: Access.READ });
    const own = { accessKeyId: "AKIDCALLER", secretAccessKey: "caller-secret", sessionToken: "caller-token" };
    const s3 = s3ClientFromAssumeScoped(scoped, { credentials: async () => own });
    try {
      assert.equal((await s3.config.credentials()).accessKeyId, own.accessKeyId, "config.credentials was overwritten");
    } finally {
      s3.destroy();
    }
    for (const bad of [0, -1, Number.NaN, 5 * 60_000]) {
      assert.throws(() => scopedCredentials(client, { bucket: env.DEMO_BUCKET }, { minRemainingMs: bad }), RangeError);
    }
  });
});

describe("multipart upload", () => {
  const PART_BYTES = 5 * 1024 * 1024; // S3's smallest part, but for the last
  const multipartKey = (name: string) => `${folder}/node-${name}-${randomBytes(4).toString("hex")}.bin`;

  test("start, grant parts, upload each with upload(), list, complete, and read back", async () => {
    const key = multipartKey("multipart");
    const bodies = [randomBytes(PART_BYTES), randomBytes(1234)].map((b) => new Uint8Array(b));
    const contentType = "application/x-storage-grants-test";
    const started = await client.startMultipartUpload({ bucket: env.DEMO_BUCKET, key, contentType });
    assert.ok(started.upload, "upload token is empty");
    assert.ok(started.uploadId, "upload_id is empty");
    try {
      const granted = await client.grantUploadParts({
        upload: started.upload,
        parts: bodies.map((body, i) => ({ partNumber: i + 1, contentLength: BigInt(body.length) })),
        ttl: ttl(120),
      });
      assert.deepEqual(granted.parts.map((p) => p.partNumber), [1, 2], "part grants, in the order asked");
      const etags: string[] = [];
      for (const [i, part] of granted.parts.entries()) {
        assert.equal(part.method, "PUT", `part ${part.partNumber}`);
        const response = await upload(part, bodies[i] as Uint8Array);
        const etag = response.headers.get("etag");
        assert.ok(etag, `part ${part.partNumber}: the store answered no ETag`);
        etags.push(etag);
      }
      // s3s-fs lists parts without ETags: only numbers and sizes are compared.
      const listed = await client.listUploadedParts({ upload: started.upload });
      assert.deepEqual(
        listed.parts.map((p) => [p.partNumber, p.size]),
        bodies.map((body, i) => [i + 1, BigInt(body.length)]),
        "ListUploadedParts (part number, size)",
      );
      const done = await client.completeMultipartUpload({
        upload: started.upload,
        parts: etags.map((etag, i) => ({ partNumber: i + 1, etag })),
      });
      assert.equal(done.key, key);
      assert.equal(done.size, BigInt(bodies.reduce((sum, body) => sum + body.length, 0)));
    } catch (error) {
      await client.abortMultipartUpload({ upload: started.upload });
      throw error;
    }
    const headers = await assertDownloads(key, Buffer.concat(bodies));
    assert.equal(headers.get("content-type"), contentType, "Content-Type of the completed object");
  });

  test("abort discards the upload: completing it afterwards fails", async () => {
    const key = multipartKey("multipart-aborted");
    const body = new Uint8Array(randomBytes(1024));
    const started = await client.startMultipartUpload({ bucket: env.DEMO_BUCKET, key, contentType: "text/plain" });
    const granted = await client.grantUploadParts({ upload: started.upload, partRange: { first: 1, last: 1 } });
    const [part] = granted.parts;
    assert.ok(part && granted.parts.length === 1, `${granted.parts.length} part grants for a range of one`);
    const etag = (await upload(part, body)).headers.get("etag") ?? "";
    await client.abortMultipartUpload({ upload: started.upload });
    await expectCode(
      () => client.completeMultipartUpload({ upload: started.upload, parts: [{ partNumber: 1, etag }] }),
      Code.FailedPrecondition,
    );
    await assertAbsent(key);
  });
});

describe("errors", () => {
  const read = { bucket: env.DEMO_BUCKET, key: env.DEMO_KEY };

  test("no credentials is UNAUTHENTICATED", async () => {
    const anonymous = createGrantsClient({ baseUrl: BASE_URL });
    await expectCode(() => anonymous.grantRead(read), Code.Unauthenticated);
  });

  test("a wrong token, or the right one under another scheme, is UNAUTHENTICATED", async () => {
    const wrong = createGrantsClient({ baseUrl: BASE_URL, token: `not-${env.SG_TEST_TOKEN}` });
    await expectCode(() => wrong.grantRead(read), Code.Unauthenticated);
    const anonymous = createGrantsClient({ baseUrl: BASE_URL });
    await expectCode(
      () => anonymous.grantRead(read, { headers: { authorization: `Basic ${env.SG_TEST_TOKEN}` } }),
      Code.Unauthenticated,
    );
  });

  test("grants outside the caller's rules are PERMISSION_DENIED", async () => {
    await expectCode(() => client.grantRead({ bucket: env.DEMO_BUCKET, key: env.DENIED_KEY }), Code.PermissionDenied);
    await expectCode(
      () => client.grantWrite({ bucket: env.DEMO_BUCKET, key: env.DENIED_KEY, contentType: "text/plain" }),
      Code.PermissionDenied,
    );
    await expectCode(
      () => client.assumeScoped({ bucket: env.DEMO_BUCKET, prefix: deniedPrefix, access: Access.READ }),
      Code.PermissionDenied,
    );
  });

  test("a bad key is INVALID_ARGUMENT with a violation on key", async () => {
    for (const key of ["a/../b", ""]) {
      await expectBadRequest(() => client.grantRead({ bucket: env.DEMO_BUCKET, key }), "key");
    }
  });

  test("a negative TTL is INVALID_ARGUMENT with a violation on ttl", async () => {
    await expectBadRequest(() => client.grantRead({ ...read, ttl: { seconds: -5n } }), "ttl");
  });

  test("a checksum that is not a base64 SHA-256 is INVALID_ARGUMENT with a violation on checksum_sha256", async () => {
    await expectBadRequest(
      () =>
        client.grantWrite({
          bucket: env.DEMO_BUCKET,
          key: `${folder}/node-bad-checksum.csv`,
          checksumSha256: "not base64 sha256",
        }),
      "checksum_sha256",
    );
  });

  test("a prefix without its trailing slash is INVALID_ARGUMENT with a violation on prefix", async () => {
    await expectBadRequest(
      () => client.assumeScoped({ bucket: env.DEMO_BUCKET, prefix: folder, access: Access.READ }),
      "prefix",
    );
  });
});
