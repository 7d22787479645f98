// The browser test: a page on its own origin (served here, on loopback) bundles
// @uppy/core and @uppy/aws-s3 with esbuild; headless Chromium (Debian's, driven by
// playwright-core) uploads through it to the store and follows click-time links.
// scripts/browser-test.sh starts the store, the CORS shim and the service, then runs this.
//
// Usage: node run.mjs smoke|full
//   smoke: bundle the page, serve it, launch Chromium, load the page (no gateway needed)
//   full:  every browser check against the running gateway
// Environment: CHROMIUM, PAGE_PORT, GATEWAY_ORIGIN, SHIM_ORIGIN, BUCKET, PREFIX,
//   TOKEN_FILE, COOKIE_NAME, LOGIN_URL, FIXTURES_FILE (full: JSON [{key, file}] of objects
//   already in the store). Exit 0 when every check passed, 1 otherwise.
//
// The page and the gateway are two hosts of one site, as in a deployment
// (app.example.com and files.example.com): Chromium resolves both names of SITE to
// loopback, and the session cookie is set for the site, the way the README says, so
// that it reaches the gateway and the gateway's routes mounted on the page's origin.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import http from "node:http";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const mode = process.argv[2];
if (mode !== "smoke" && mode !== "full") {
  console.error("usage: node run.mjs smoke|full");
  process.exit(2);
}
const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) {
    console.error(`run.mjs: ${name} is not set`);
    process.exit(2);
  }
  return v;
};
const CHROMIUM = env("CHROMIUM", "/usr/bin/chromium");
const PAGE_PORT = Number(env("PAGE_PORT"));
const SITE = "storage-grants.test";
const PAGE_ORIGIN = `http://app.${SITE}:${PAGE_PORT}`;
// What the browser calls the gateway; this script reaches it on loopback.
const GATEWAY_ORIGIN = env("GATEWAY_ORIGIN", `http://files.${SITE}:9`);
const SHIM_ORIGIN = env("SHIM_ORIGIN", "http://127.0.0.1:9");
const BUCKET = env("BUCKET", "demo");
const PREFIX = env("PREFIX", "");
const COOKIE_NAME = env("COOKIE_NAME", "sg_session");
const LOGIN_URL = env("LOGIN_URL", `${PAGE_ORIGIN}/login`);
const TOKEN = mode === "full" ? readFileSync(env("TOKEN_FILE"), "utf8").trim() : "";
// The page reaches the gateway's /s3 routes through its own origin under this path.
const MOUNT = "/storage";

const say = (msg) => console.log(`browser-test: ${msg}`);
const redact = (s) =>
  String(s)
    .replace(/(X-Amz-(Signature|Credential|Security-Token)=)[^&\s"]*/gi, "$1[REDACTED]")
    .replace(/("?(x-amz-signature|x-amz-credential|policy|x-amz-security-token)"?\s*:\s*")[^"]*/gi, "$1[REDACTED]")
    .replaceAll(TOKEN || "\u0000", "[JWT]");
const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");
const shortUrl = (u) => {
  try {
    const url = new URL(u);
    return `${url.origin}${url.pathname}${url.search ? `?${redact(url.search.slice(1))}` : ""}`;
  } catch {
    return redact(u);
  }
};

const results = [];
async function check(name, fn) {
  say(`step: ${name}`);
  try {
    await fn();
    results.push([name, true]);
    say(`PASS ${name}`);
  } catch (err) {
    results.push([name, false]);
    say(`FAIL ${name}: ${redact(err?.message ?? err)}`);
  }
}
const expect = (cond, msg) => {
  if (!cond) throw new Error(msg);
};

// --- the page, its bundle and its server -------------------------------------------

async function bundle() {
  const out = join(here, "build");
  mkdirSync(out, { recursive: true });
  await build({
    entryPoints: [join(here, "page", "app.js")],
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "chrome120",
    outfile: join(out, "app.js"),
    logLevel: "warning",
  });
  return readFileSync(join(out, "app.js"));
}

function pageHtml() {
  const config = {
    companionEndpoint: `${PAGE_ORIGIN}${MOUNT}`,
    gatewayOrigin: GATEWAY_ORIGIN,
    bucket: BUCKET,
  };
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>storage-grants browser test</title>
<script id="config" type="application/json">${JSON.stringify(config)}</script></head>
<body><h1>Uploads</h1><input id="files" type="file" multiple><ul id="links"></ul>
<script src="/app.js"></script></body></html>`;
}

const proxied = []; // what the page's origin forwarded to the gateway

function startPageServer(appJs) {
  const gw = new URL(GATEWAY_ORIGIN);
  const server = http.createServer((req, res) => {
    const path = req.url.split("?")[0];
    if (req.method === "GET" && path === "/") {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" });
      res.end(pageHtml());
    } else if (req.method === "GET" && path === "/app.js") {
      res.writeHead(200, { "Content-Type": "text/javascript", "Cache-Control": "no-store" });
      res.end(appJs);
    } else if (req.method === "GET" && path === "/login") {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
      res.end("<!doctype html><title>Sign in</title><h1>Sign in</h1>");
    } else if (path === MOUNT || path.startsWith(`${MOUNT}/`)) {
      // The gateway mounted on the page's origin: forwarded as is (cookie, Origin,
      // body), with the gateway's Host, the mount path stripped.
      const headers = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        if (req.rawHeaders[i].toLowerCase() === "host") continue;
        headers.push(req.rawHeaders[i], req.rawHeaders[i + 1]);
      }
      headers.push("Host", gw.host);
      const entry = {
        method: req.method,
        path: req.url.slice(MOUNT.length),
        origin: req.headers.origin ?? "none",
        cookie: new RegExp(`(^|;\\s*)${COOKIE_NAME}=`).test(req.headers.cookie ?? "") ? "yes" : "no",
      };
      const reqChunks = [];
      req.on("data", (c) => reqChunks.push(c));
      const up = http.request(
        { host: "127.0.0.1", port: Number(gw.port), method: req.method, path: entry.path, headers, setHost: false, agent: false },
        (upRes) => {
          const chunks = [];
          upRes.on("data", (c) => chunks.push(c));
          upRes.on("end", () => {
            const body = Buffer.concat(chunks);
            entry.status = upRes.statusCode;
            entry.requestBody = Buffer.concat(reqChunks).toString().slice(0, 500);
            entry.responseBody = body.toString().slice(0, 800);
            entry.contentType = upRes.headers["content-type"];
            proxied.push(entry);
            res.writeHead(upRes.statusCode, upRes.statusMessage, upRes.rawHeaders);
            res.end(body);
          });
        },
      );
      up.on("error", (err) => {
        entry.status = 502;
        entry.responseBody = `gateway unreachable: ${err.message}`;
        proxied.push(entry);
        if (!res.headersSent) res.writeHead(502, { "Content-Type": "text/plain" });
        res.end("the gateway did not answer\n");
      });
      req.pipe(up);
    } else {
      res.writeHead(404, { "Content-Type": "text/plain" });
      res.end("not found\n");
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(PAGE_PORT, "127.0.0.1", () => resolve(server));
  });
}

function printProxied(from = 0) {
  for (const e of proxied.slice(from)) {
    say(`  page origin -> gateway: ${e.method} ${redact(e.path)} (Origin: ${e.origin}, session cookie: ${e.cookie}) -> ${e.status}` +
      (e.requestBody ? `\n      request body: ${redact(e.requestBody)}` : "") +
      `\n      response (${e.contentType ?? "-"}): ${redact(e.responseBody)}`);
  }
}

// --- Chromium --------------------------------------------------------------------

async function launch() {
  // playwright-core's launch() gives Chromium a fresh, temporary --user-data-dir of its
  // own (removed on close); the rest are the flags a CI container needs.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--host-resolver-rules=MAP app.${SITE} 127.0.0.1, MAP files.${SITE} 127.0.0.1`,
    ],
    timeout: 30_000,
  });
}

function watchNetwork(page, label, log) {
  page.on("requestfailed", (r) => log.push(`${label} request failed: ${r.method()} ${shortUrl(r.url())}: ${r.failure()?.errorText}`));
  page.on("response", async (r) => {
    const url = r.url();
    if (url.startsWith(PAGE_ORIGIN) && !url.includes(MOUNT)) return;
    const line = `${label} ${r.request().method()} ${shortUrl(url)} -> ${r.status()}`;
    if (r.status() < 400 || !url.startsWith(`${SHIM_ORIGIN}/`)) {
      log.push(line);
      return;
    }
    // The store's error, code and message only (its other fields may echo signatures).
    const text = await r.text().catch(() => "");
    const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
    const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1];
    log.push(`${line} (store: ${code ?? "?"}${message ? `: ${message}` : ""})`);
  });
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") log.push(`${label} console.${m.type()}: ${redact(m.text())}`);
  });
  page.on("pageerror", (e) => log.push(`${label} page error: ${redact(e.message)}`));
}

// Clicks a link and returns what the browser ended up with: the bytes and the URL of
// the response that carried them (rendered page or download), and the redirect hop.
async function follow(page, selector) {
  const download = page.waitForEvent("download", { timeout: 20_000 }).then((d) => ({ download: d }));
  const response = page
    .waitForResponse((r) => r.url().startsWith(`${SHIM_ORIGIN}/`) && r.request().isNavigationRequest(), { timeout: 20_000 })
    .then((r) => ({ response: r }));
  download.catch(() => {});
  response.catch(() => {});
  await page.click(selector);
  const first = await Promise.race([download, response]);
  if (first.response) {
    const r = first.response;
    const hop = r.request().redirectedFrom();
    const hopResponse = hop ? await hop.response() : null;
    try {
      return { url: r.url(), status: r.status(), body: await r.body(), hop: hopResponse, how: "page" };
    } catch {
      // a response that became a download has no body here
      const { download: d } = await download;
      return fromDownload(d, hopResponse);
    }
  }
  return fromDownload(first.download, null);
}
async function fromDownload(d, hop) {
  const failure = await d.failure();
  if (failure) throw new Error(`download failed: ${failure}`);
  const path = await d.path();
  return { url: d.url(), status: 200, body: readFileSync(path), hop, how: `download (${d.suggestedFilename()})` };
}

// --- the checks --------------------------------------------------------------------

const appJs = await (async () => {
  say("step: bundle @uppy/core + @uppy/aws-s3 with esbuild");
  return bundle();
})();
say(`bundle built (${appJs.length} bytes)`);
const pageServer = await startPageServer(appJs);
say(`test page on ${PAGE_ORIGIN} (gateway mounted at ${PAGE_ORIGIN}${MOUNT} -> ${GATEWAY_ORIGIN})`);

say(`step: launch ${CHROMIUM}`);
const browser = await launch();
say(`Chromium ${browser.version()} launched`);
const netlog = [];

try {
  if (mode === "smoke") {
    await check("the page loads in Chromium with Uppy bundled", async () => {
      const context = await browser.newContext();
      const page = await context.newPage();
      watchNetwork(page, "page", netlog);
      await page.goto(`${PAGE_ORIGIN}/`, { timeout: 15_000 });
      const ready = await page.waitForFunction(() => window.pageReady, null, { timeout: 10_000 }).then((h) => h.jsonValue());
      say(`page ready: @uppy/core ${ready.uppyCore}, @uppy/aws-s3 ${ready.awsS3}`);
      await context.close();
    });
  } else {
    await runFull();
  }
} finally {
  await browser.close().catch(() => {});
  pageServer.close();
}

if (results.some(([, ok]) => !ok) && netlog.length) {
  say("browser network log (queries redacted):");
  for (const line of netlog.slice(-80)) say(`  ${line}`);
}
const failed = results.filter(([, ok]) => !ok);
say(`${results.length - failed.length}/${results.length} browser checks passed`);
for (const [name, ok] of results) say(`  ${ok ? "PASS" : "FAIL"} ${name}`);
process.exit(failed.length === 0 && results.length > 0 ? 0 : 1);

async function runFull() {
  const run = randomBytes(4).toString("hex");
  const small = { name: `hello-${run}.txt`, mimeType: "text/plain", buffer: Buffer.from(`hello from the browser test ${run}\n`) };
  const big = { name: `big-${run}.bin`, mimeType: "application/octet-stream", buffer: randomBytes(6 * 1024 * 1024 + 12345) };
  // Objects the script put into the store before the service started, so the link
  // checks do not depend on the upload checks.
  const fixtures = JSON.parse(readFileSync(env("FIXTURES_FILE"), "utf8")).map((f) => ({
    ...f,
    buffer: readFileSync(f.file),
  }));
  const plain = fixtures[0];
  const tricky = fixtures[1];
  const linkTo = (key, download) =>
    `${GATEWAY_ORIGIN}/v1/objects/${encodeURIComponent(BUCKET)}/${key.split("/").map(encodeURIComponent).join("/")}` +
    (download ? `?download=${encodeURIComponent(download)}` : "");

  const context = await browser.newContext({ acceptDownloads: true });
  // The session cookie the app's login would set, for the site (Domain=SITE): the
  // browser sends it to the gateway and to the page's origin, where Uppy's routes are
  // mounted. A cookie for the gateway's host alone would never reach those.
  await context.addCookies([{ name: COOKIE_NAME, value: TOKEN, domain: `.${SITE}`, path: "/", httpOnly: true, sameSite: "Lax" }]);
  const page = await context.newPage();
  watchNetwork(page, "page", netlog);
  await page.goto(`${PAGE_ORIGIN}/`, { timeout: 15_000 });
  const ready = await page.waitForFunction(() => window.pageReady, null, { timeout: 10_000 }).then((h) => h.jsonValue());
  say(`page ready: @uppy/core ${ready.uppyCore}, @uppy/aws-s3 ${ready.awsS3}`);

  // Renders one link on the page and clicks it.
  const click = async (id, key, download) => {
    await page.goto(`${PAGE_ORIGIN}/`);
    await page.evaluate((links) => window.renderLinks(links), [{ id, key, download }]);
    return follow(page, `#${id}`);
  };

  let target = null; // the presigned URL a click led to
  await check("a click-time link to a stored object: 302 to the store, exact bytes", async () => {
    const got = await click("plain", plain.key);
    say(`  followed via ${got.how}: gateway ${got.hop ? got.hop.status() : "?"} -> ${shortUrl(got.url)} -> ${got.status}`);
    if (got.hop) {
      const h = await got.hop.allHeaders();
      say(`  gateway redirect headers: cache-control=${h["cache-control"]}, referrer-policy=${h["referrer-policy"]}`);
    }
    expect(new URL(got.url).origin === SHIM_ORIGIN, `the link led to ${new URL(got.url).origin}, not the store`);
    expect(sha256(got.body) === sha256(plain.buffer), `SHA-256 differs (got ${got.body.length} bytes, stored ${plain.buffer.length})`);
    target = got.url;
  });

  await check("a click-time link to a key with a space, '+', '%' and non-ASCII characters", async () => {
    say(`  key ${JSON.stringify(tricky.key)} -> ${linkTo(tricky.key).slice(GATEWAY_ORIGIN.length)}`);
    const got = await click("tricky", tricky.key);
    expect(sha256(got.body) === sha256(tricky.buffer), `SHA-256 differs (got ${got.body.length} bytes, stored ${tricky.buffer.length})`);
  });

  await check("without the cookie, the same link sends a browser to the login URL", async () => {
    const other = await browser.newContext();
    const p2 = await other.newPage();
    watchNetwork(p2, "no-cookie", netlog);
    try {
      await p2.goto(linkTo(plain.key), { timeout: 15_000 });
      const landed = new URL(p2.url());
      const login = new URL(LOGIN_URL);
      say(`  landed on ${landed.origin}${landed.pathname}${landed.search}`);
      expect(landed.origin === login.origin && landed.pathname === login.pathname, `landed on ${landed.origin}${landed.pathname}, not ${LOGIN_URL}`);
    } finally {
      await other.close();
    }
  });

  await check("without identity, a non-browser client gets 401 JSON", async () => {
    // From this script, not the browser: the gateway's name resolves in Chromium only.
    const loopback = linkTo(plain.key).replace(new URL(GATEWAY_ORIGIN).hostname, "127.0.0.1");
    const res = await fetch(loopback, { redirect: "manual", headers: { Accept: "application/json" } });
    const body = await res.text();
    say(`  ${res.status} ${res.headers.get("content-type")}: ${redact(body.slice(0, 300))}`);
    expect(res.status === 401, `answered ${res.status}`);
    expect(/json/i.test(res.headers.get("content-type") ?? ""), "not JSON");
  });

  let uploads = null;
  const mark = proxied.length;
  await check("Uppy uploads a small file (one POST form) and a 6 MiB file (multipart, 2 parts) to the store", async () => {
    await page.goto(`${PAGE_ORIGIN}/`);
    await page.setInputFiles("#files", [small, big]);
    const out = await page.evaluate(() => window.uploadWithUppy());
    uploads = out;
    for (const e of out.events) say(`  uppy event ${e.event} ${e.file ?? ""} ${e.detail ? redact(JSON.stringify(e.detail)) : ""}`);
    printProxied(mark);
    const bad = out.files.filter((f) => !f.ok);
    expect(bad.length === 0, `Uppy reported failures: ${bad.map((f) => `${f.name}: ${f.error}`).join("; ")}`);
    expect(out.files.length === 2, `expected 2 uploaded files, Uppy reported ${out.files.length}`);
    for (const f of out.files) {
      expect(f.key?.startsWith(PREFIX), `${f.name} was stored under "${f.key}", not under the caller's prefix ${PREFIX}`);
    }
    const parts = out.events.filter((e) => e.event === "s3-multipart:part-uploaded" && e.file === big.name);
    expect(parts.length === 2, `the 6 MiB file went up in ${parts.length} parts, expected 2`);
    const calls = proxied.slice(mark).map((e) => `${e.method} ${e.path.split("?")[0]}`);
    expect(calls.some((c) => c.startsWith("GET /s3/params")), "no GET /s3/params was made");
    expect(calls.some((c) => c === "POST /s3/multipart"), "no POST /s3/multipart was made");
  });
  const keyOf = (name) => uploads?.files.find((f) => f.name === name && f.ok)?.key;

  await check("a click-time link reads back the small Uppy upload's exact bytes", async () => {
    const key = keyOf(small.name);
    expect(key, "no uploaded key for the small file");
    const got = await click("small", key);
    say(`  followed via ${got.how}: ${shortUrl(got.url)}`);
    expect(sha256(got.body) === sha256(small.buffer), `SHA-256 differs (got ${got.body.length} bytes, sent ${small.buffer.length})`);
  });

  await check("a click-time download link (?download=) reads back the multipart upload's exact bytes", async () => {
    const key = keyOf(big.name);
    expect(key, "no uploaded key for the multipart file");
    const got = await click("big", key, big.name);
    say(`  followed via ${got.how}: ${shortUrl(got.url)}`);
    expect(sha256(got.body) === sha256(big.buffer), `SHA-256 differs (got ${got.body.length} bytes, sent ${big.buffer.length})`);
  });

  await check("the app's JS signs an upload with POST /v1/uploads (cross-origin, cookie) and uploads it; a link reads it back", async () => {
    await page.goto(`${PAGE_ORIGIN}/`);
    const key = `${PREFIX}direct-${run}/note.txt`;
    const text = `direct upload ${run}\n`;
    const out = await page.evaluate(([k, t]) => window.directUpload(k, t, "text/plain"), [key, text]);
    say(`  direct upload: ${redact(JSON.stringify(out))}`);
    expect(out.ok, `direct upload failed at ${out.step}: ${out.status} ${redact(out.body ?? "")}`);
    const got = await click("direct", key);
    expect(sha256(got.body) === sha256(Buffer.from(text)), "read-back bytes differ");
  });

  await check("the presigned target URL, fetched again after its expiry, is refused by the store", async () => {
    expect(target, "no target URL from the first click-time link");
    const u = new URL(target);
    const date = u.searchParams.get("X-Amz-Date");
    const expires = Number(u.searchParams.get("X-Amz-Expires"));
    expect(date && expires > 0, "the target URL has no X-Amz-Date/X-Amz-Expires");
    const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(date);
    expect(m, `unexpected X-Amz-Date ${date}`);
    const expiry = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) + expires * 1000;
    const wait = expiry + 1500 - Date.now();
    say(`  the URL lives ${expires}s; waiting ${Math.max(0, Math.ceil(wait / 1000))}s more for it to expire`);
    expect(wait <= 60_000, `the URL lives ${expires}s: the read rule's short max_ttl was not applied`);
    if (wait > 0) await sleep(wait);
    const res = await fetch(target);
    const body = await res.text();
    say(`  after expiry: ${res.status} ${redact(body.slice(0, 200).replace(/\s+/g, " "))}`);
    expect(res.status === 403, `the expired URL answered ${res.status}, expected 403`);
  });

  await context.close();
}
