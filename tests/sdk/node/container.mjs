// The AWS SDK for JavaScript v3, unmodified and configured by environment only, on
// scoped credentials it fetches (and fetches again) by itself from a
// container-credentials endpoint.
//
// The S3Client gets no credentials in code: its default chain
// (@aws-sdk/credential-provider-node) finds AWS_CONTAINER_CREDENTIALS_FULL_URI and
// fetches with @aws-sdk/credential-provider-http, sending the token read from
// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE. Region and endpoint come from AWS_REGION and
// AWS_ENDPOINT_URL. SDK_BUCKET, SDK_PREFIX: where to write; SDK_AUDIT_LOG, SDK_CALLER:
// the service's log and the caller, to count fetches at the endpoint.
//
// What it proves: put, get and list inside the prefix with one fetch; then, with
// Date.now() moved ahead so the credentials are inside the SDK's 5-minute refresh
// window, the SDK fetches again by itself and no call fails. Exit 0 when everything
// held. No secret is printed.
import { readFileSync } from "node:fs";
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";

const bucket = process.env.SDK_BUCKET;
const prefix = process.env.SDK_PREFIX;
const auditLog = process.env.SDK_AUDIT_LOG;
const caller = process.env.SDK_CALLER;
const name = "node @aws-sdk/client-s3";

// The clock the SDK's expiry checks read (Date.now() in @smithy/core's
// memoizeIdentityProvider and @aws-sdk/credential-provider-node's chain), moved by the
// test only.
const realNow = Date.now;
let shiftMs = 0;
Date.now = () => realNow() + shiftMs;

const failures = [];
const say = (message) => console.log(`${name}: ${message}`);
const check = (condition, message) => {
  say(`${condition ? "ok  " : "FAIL"} ${message}`);
  if (!condition) failures.push(message);
  return condition;
};

// Same count as tests/sdk/fetches.py: one `grant issued` audit event (a JSON object on
// its own line) per answer.
const auditEvent = (line) => {
  if (!line.startsWith("{")) return null;
  try {
    return JSON.parse(line);
  } catch {
    return null;
  }
};
const fetches = () =>
  readFileSync(auditLog, "utf8")
    .split("\n")
    .map(auditEvent)
    .filter(
      (event) =>
        event !== null &&
        event.target === "audit" &&
        event.message === "grant issued" &&
        event.caller === caller &&
        event.scope === prefix &&
        String(event.action ?? "").startsWith("assume-"),
    ).length;

const s3 = new S3Client({});
const before = fetches();

const key = `${prefix}node/hello.txt`;
const body = `written by ${name} with credentials it fetched itself`;
try {
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
  const got = await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body.transformToString();
  const listed = ((await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))).Contents ?? []).map(
    (o) => o.Key,
  );
  check(got === body, `put then get s3://${bucket}/${key} returns the bytes written`);
  check(listed.includes(key), `list s3://${bucket}/${prefix} shows it (${listed.length} keys under the prefix)`);
} catch (e) {
  check(false, `put/get/list inside the prefix: ${e.name}: ${e.message}`);
  process.exit(1);
}
const afterFirst = fetches();
check(afterFirst - before === 1, `one fetch at the endpoint for 3 calls (counted ${afterFirst - before}): the SDK caches`);

// The identity the client holds (memoized: asking for it does not fetch again).
const identity = await s3.config.credentials();
const leftMs = identity.expiration.getTime() - Date.now();
check(leftMs > 20 * 60_000, `the credentials have ${(leftMs / 60_000).toFixed(1)} min left, outside every SDK's refresh window`);

// 4 minutes left by the SDK's clock: inside its 5-minute window.
shiftMs = leftMs - 4 * 60_000;
say(
  `clock moved ${(shiftMs / 60_000).toFixed(1)} min ahead: ${((identity.expiration.getTime() - Date.now()) / 60_000).toFixed(1)} min left by the SDK's clock`,
);
let ok = 0;
const rounds = 3;
for (let i = 0; i < rounds; i++) {
  try {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}node/refresh-${i}.txt`, Body: "x" }));
    await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}node/`, MaxKeys: 5 }));
    ok++;
  } catch (e) {
    say(`call ${i} in the refresh window failed: ${e.name}: ${e.message}`);
  }
}
const afterShift = fetches();
check(ok === rounds, `refresh window: ${ok}/${rounds} put+list rounds succeeded`);
check(afterShift > afterFirst, `refresh window: the SDK fetched again by itself (${afterShift - afterFirst} fetches)`);
say(
  "the service's clock did not move, so it answered from its cache with credentials that still have > 20 min left by its clock",
);
say("note: moto evaluates no session policies, so denial outside the prefix is not shown here");
if (failures.length > 0) {
  say(`${failures.length} check(s) failed`);
  process.exit(1);
}
say("all checks passed");
