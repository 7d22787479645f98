// The store path of the browser test, checked without a browser and without the HTTP
// gateway: grants from the service's gRPC API (buf curl, authenticated with the test
// JWT), used through the CORS shim, so a failure here is the shim's or the setup's, not
// the gateway's. Proves that the shim forwards presigned PUT, POST-form and GET requests
// with their signatures intact, that the store still refuses a tampered signature
// through it, and that it answers CORS like an S3 bucket rule.
//
// Environment: BUF (buf binary), SG_GRPC (host:port), SG_TOKEN_FILE, SHIM_ORIGIN,
// PAGE_ORIGIN, BUCKET, PREFIX (the test caller's prefix, ending in "/").
// Exit 0 when every check passed, 1 otherwise.
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`store-check: ${name} is not set`);
    process.exit(2);
  }
  return v;
};
const BUF = env("BUF");
const GRPC = env("SG_GRPC");
const TOKEN = readFileSync(env("SG_TOKEN_FILE"), "utf8").trim();
const SHIM = env("SHIM_ORIGIN");
const PAGE = env("PAGE_ORIGIN");
const BUCKET = env("BUCKET");
const PREFIX = env("PREFIX");

const say = (msg) => console.log(`store-check: ${msg}`);
const redact = (url) => String(url).replace(/(X-Amz-(Signature|Credential|Security-Token)=)[^&]*/gi, "$1[REDACTED]");
const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");

async function grant(method, request) {
  const { stdout } = await promisify(execFile)(
    BUF,
    [
      "curl", "--protocol", "grpc", "--http2-prior-knowledge",
      "-H", `authorization: Bearer ${TOKEN}`,
      "-d", JSON.stringify(request),
      `http://${GRPC}/storagegrants.v1.GrantService/${method}`,
    ],
    { timeout: 15_000 },
  ).catch((err) => {
    throw new Error(`${method} failed: ${String(err.stderr || err.message).trim()}`);
  });
  return JSON.parse(stdout);
}

const checks = [];
async function check(name, fn) {
  try {
    await fn();
    checks.push([name, true]);
    say(`PASS ${name}`);
  } catch (err) {
    checks.push([name, false]);
    say(`FAIL ${name}: ${redact(err.message)}`);
  }
}
const expect = (cond, msg) => {
  if (!cond) throw new Error(msg);
};

const run = randomBytes(4).toString("hex");
const putKey = `${PREFIX}store-check-${run}/put.txt`;
const putBody = Buffer.from(`store-check PUT ${run}\n`);
const formKey = `${PREFIX}store-check-${run}/form.txt`;
const formBody = Buffer.from(`store-check POST form ${run}\n`);

async function readBack(key) {
  const read = await grant("GrantRead", { bucket: BUCKET, key, ttl: "60s" });
  expect(new URL(read.url).origin === SHIM, `GrantRead URL points at ${new URL(read.url).origin}, not the shim ${SHIM}`);
  const res = await fetch(read.url, { headers: read.headers ?? {} });
  const body = Buffer.from(await res.arrayBuffer());
  expect(res.status === 200, `GET through the shim answered ${res.status}: ${body.toString().slice(0, 300)}`);
  return { url: read.url, body };
}

await check("presigned PUT through the shim (pinned type, length, SHA-256)", async () => {
  const write = await grant("GrantWrite", {
    bucket: BUCKET, key: putKey, contentType: "text/plain", contentLength: String(putBody.length),
    checksumSha256: createHash("sha256").update(putBody).digest("base64"),
  });
  expect(write.method === "PUT", `GrantWrite answered method ${write.method}`);
  expect(new URL(write.url).origin === SHIM, `GrantWrite URL points at ${new URL(write.url).origin}, not the shim`);
  const res = await fetch(write.url, { method: "PUT", headers: write.headers ?? {}, body: putBody });
  const text = await res.text();
  expect(res.ok, `PUT answered ${res.status}: ${text.slice(0, 300)}`);
  expect(res.headers.get("etag"), "PUT answer has no ETag");
});

let readUrl;
await check("presigned GET through the shim returns the exact bytes", async () => {
  const { url, body } = await readBack(putKey);
  readUrl = url;
  expect(sha256(body) === sha256(putBody), `SHA-256 differs: got ${body.length} bytes`);
});

await check("a tampered signature is refused by the store through the shim", async () => {
  expect(readUrl, "no read URL from the previous step");
  const u = new URL(readUrl);
  const sig = u.searchParams.get("X-Amz-Signature");
  expect(sig, "the URL has no X-Amz-Signature");
  u.searchParams.set("X-Amz-Signature", (sig[0] === "0" ? "1" : "0") + sig.slice(1));
  const res = await fetch(u);
  await res.arrayBuffer();
  expect(res.status === 403, `tampered GET answered ${res.status}, expected 403`);
});

await check("presigned POST form through the shim (size range policy)", async () => {
  const write = await grant("GrantWrite", {
    bucket: BUCKET, key: formKey, contentType: "text/plain",
    contentLengthRange: { minBytes: "1", maxBytes: "1048576" },
  });
  expect(write.method === "POST", `GrantWrite answered method ${write.method}`);
  const form = new FormData();
  for (const [k, v] of Object.entries(write.formFields ?? {})) form.set(k, v);
  form.set(write.fileField || "file", new Blob([formBody], { type: "text/plain" }), "form.txt");
  const res = await fetch(write.url, { method: "POST", body: form, headers: { Origin: PAGE } });
  const text = await res.text();
  expect(res.ok, `POST answered ${res.status}: ${text.slice(0, 300)}`);
  expect(res.headers.get("access-control-allow-origin") === PAGE, "POST answer lacks Access-Control-Allow-Origin for the page");
  const { body } = await readBack(formKey);
  expect(sha256(body) === sha256(formBody), "read-back bytes differ");
});

await check("CORS preflight: allowed origin gets the rule's headers", async () => {
  const res = await fetch(`${SHIM}/${BUCKET}/${putKey}`, {
    method: "OPTIONS",
    headers: { Origin: PAGE, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type" },
  });
  expect(res.status === 200, `preflight answered ${res.status}`);
  expect(res.headers.get("access-control-allow-origin") === PAGE, "no echoed Access-Control-Allow-Origin");
  expect(/PUT/.test(res.headers.get("access-control-allow-methods") ?? ""), "PUT not allowed");
  expect(/content-type/i.test(res.headers.get("access-control-allow-headers") ?? ""), "content-type not allowed");
  expect(/origin/i.test(res.headers.get("vary") ?? ""), "no Vary: Origin");
});

await check("CORS preflight: another origin is refused", async () => {
  const res = await fetch(`${SHIM}/${BUCKET}/${putKey}`, {
    method: "OPTIONS",
    headers: { Origin: "http://127.0.0.1:1", "Access-Control-Request-Method": "PUT" },
  });
  await res.arrayBuffer();
  expect(res.status === 403, `preflight for another origin answered ${res.status}`);
  expect(!res.headers.get("access-control-allow-origin"), "refused preflight still allows an origin");
});

await check("CORS on a real answer: origin echoed, ETag exposed", async () => {
  const read = await grant("GrantRead", { bucket: BUCKET, key: putKey, ttl: "60s" });
  const res = await fetch(read.url, { headers: { Origin: PAGE } });
  await res.arrayBuffer();
  expect(res.status === 200, `GET answered ${res.status}`);
  expect(res.headers.get("access-control-allow-origin") === PAGE, "no echoed Access-Control-Allow-Origin");
  expect(/etag/i.test(res.headers.get("access-control-expose-headers") ?? ""), "ETag not exposed");
  expect(/origin/i.test(res.headers.get("vary") ?? ""), "no Vary: Origin");
});

const failed = checks.filter(([, ok]) => !ok);
say(`${checks.length - failed.length}/${checks.length} store checks passed`);
process.exit(failed.length === 0 ? 0 : 1);
