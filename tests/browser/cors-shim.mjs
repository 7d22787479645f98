// A test-only CORS front for s3s-fs, which has no CORS of its own.
//
// It behaves like S3 with one bucket CORS rule:
//   AllowedOrigins: the origins given, AllowedMethods: GET HEAD PUT POST DELETE,
//   AllowedHeaders: *, ExposeHeaders: ETag and the x-amz-* ones a browser reads,
//   MaxAgeSeconds: 300
// - a preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered here:
//   200 with the CORS headers when the rule matches, 403 otherwise, as S3 does;
// - every other request is forwarded to the store unchanged: same method, the request
//   target exactly as received, the same headers in the same order with the same
//   case (Host included, so the store verifies the SigV4 signature that was made for
//   this address), the same body bytes with the same framing (Content-Length, chunked,
//   or none). Only the hop-by-hop `Connection: close` is added when the client sent no
//   Connection header (one connection per request to the store). The store's answer comes back unchanged, plus
//   the CORS headers S3 adds when the request's Origin matches the rule.
//
// Usage: node cors-shim.mjs LISTEN_PORT UPSTREAM_PORT ALLOWED_ORIGIN...
// Binds 127.0.0.1 only. Logs one line per request (method, path without the query,
// status): never a query string, which would hold signatures.
import http from "node:http";

const [listenPort, upstreamPort, ...allowedOrigins] = process.argv.slice(2);
if (!listenPort || !upstreamPort || allowedOrigins.length === 0) {
  console.error("usage: node cors-shim.mjs LISTEN_PORT UPSTREAM_PORT ALLOWED_ORIGIN...");
  process.exit(2);
}

const ALLOWED_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE"];
const EXPOSE_HEADERS = ["ETag", "x-amz-version-id", "x-amz-request-id", "x-amz-id-2"];
const MAX_AGE = "300";

const pathOnly = (url) => url.split("?")[0];
const log = (...parts) => console.log(new Date().toISOString(), ...parts);

// The response headers S3 adds for a request whose Origin matches the rule.
function corsHeaders(origin) {
  return {
    "Access-Control-Allow-Origin": origin,
    "Access-Control-Allow-Methods": ALLOWED_METHODS.join(", "),
    "Access-Control-Expose-Headers": EXPOSE_HEADERS.join(", "),
    "Access-Control-Max-Age": MAX_AGE,
    "Access-Control-Allow-Credentials": "true",
    Vary: "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
  };
}

function preflight(req, res) {
  const origin = req.headers.origin;
  const method = req.headers["access-control-request-method"];
  const requested = req.headers["access-control-request-headers"];
  if (!allowedOrigins.includes(origin) || !ALLOWED_METHODS.includes(method)) {
    const body =
      '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessForbidden</Code>' +
      "<Message>CORSResponse: This CORS request is not allowed. This is usually because the " +
      "evalution of Origin, request method / Access-Control-Request-Method or " +
      "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.</Message></Error>";
    res.writeHead(403, { "Content-Type": "application/xml", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
    log("OPTIONS", pathOnly(req.url), 403, `preflight refused (origin ${origin}, method ${method})`);
    return;
  }
  const headers = { ...corsHeaders(origin), "Content-Length": "0" };
  // AllowedHeaders "*": S3 echoes the requested headers.
  if (requested) headers["Access-Control-Allow-Headers"] = requested;
  res.writeHead(200, headers);
  res.end();
  log("OPTIONS", pathOnly(req.url), 200, `preflight ${method} [${requested ?? ""}]`);
}

// The request's headers as sent (rawHeaders: order, case, Host), repeated names kept
// as repeated lines. An object, not the raw array: with an array Node writes the head at
// once, before it can be told that a request without Content-Length has no body.
function sentHeaders(req) {
  const headers = {};
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i];
    const value = req.rawHeaders[i + 1];
    const same = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
    if (same === undefined) headers[name] = value;
    else headers[same] = [].concat(headers[same], value);
  }
  return headers;
}

function forward(req, res) {
  const upstream = http.request(
    {
      host: "127.0.0.1",
      port: Number(upstreamPort),
      method: req.method,
      path: req.url,
      headers: sentHeaders(req),
      setHost: false,
      agent: false,
    },
    (up) => {
      const headers = [];
      for (let i = 0; i < up.rawHeaders.length; i += 2) {
        // Only this front speaks CORS; the store's own (none today) would conflict.
        if (/^access-control-/i.test(up.rawHeaders[i])) continue;
        headers.push(up.rawHeaders[i], up.rawHeaders[i + 1]);
      }
      const origin = req.headers.origin;
      if (origin && allowedOrigins.includes(origin)) {
        for (const [k, v] of Object.entries(corsHeaders(origin))) {
          if (k === "Vary") {
            // keep the store's Vary values too
            const i = headers.findIndex((h, j) => j % 2 === 0 && h.toLowerCase() === "vary");
            if (i >= 0) {
              headers[i + 1] = `${headers[i + 1]}, ${v}`;
              continue;
            }
          }
          headers.push(k, v);
        }
      }
      res.writeHead(up.statusCode, up.statusMessage, headers);
      up.pipe(res);
      // How the body was framed: what a store's "MissingContentLength" is about.
      const framing = `content-length ${req.headers["content-length"] ?? "none"}, transfer-encoding ${req.headers["transfer-encoding"] ?? "none"}`;
      log(req.method, pathOnly(req.url), up.statusCode, framing, origin ? `origin ${origin}` : "");
    },
  );
  // A request without Content-Length or Transfer-Encoding has no body: forward it so,
  // not with the `Transfer-Encoding: chunked` Node would add to a POST or PUT.
  if (req.headers["content-length"] === undefined && req.headers["transfer-encoding"] === undefined) {
    upstream.useChunkedEncodingByDefault = false;
  }
  upstream.on("error", (err) => {
    log(req.method, pathOnly(req.url), 502, `upstream error: ${err.message}`);
    if (!res.headersSent) res.writeHead(502, { "Content-Type": "text/plain" });
    res.end("cors-shim: the store did not answer\n");
  });
  req.pipe(upstream);
}

const server = http.createServer((req, res) => {
  if (req.method === "OPTIONS" && req.headers.origin && req.headers["access-control-request-method"]) {
    preflight(req, res);
  } else {
    forward(req, res);
  }
});
server.listen(Number(listenPort), "127.0.0.1", () => {
  log(`cors-shim listening on http://127.0.0.1:${listenPort}, forwarding to 127.0.0.1:${upstreamPort}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
