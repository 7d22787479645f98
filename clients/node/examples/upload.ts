/**
 * GrantWrite with every pin of a presigned PUT, then upload with `fetch`; then a POST
 * form grant (size range), as a browser would use it.
 *
 * With ./scripts/run-local.sh running:
 *   npm run build && node dist/examples/upload.js
 */
import { createHash } from "node:crypto";

import { Code, createGrantsClient, fieldViolations, GrantedRequestError, grpcCode, ttl, upload } from "../src/index.js";

const client = createGrantsClient({
  baseUrl: process.env["SG_URL"] ?? "http://127.0.0.1:50051",
  token: process.env["SG_TOKEN"] ?? "dev-local-token-0123456789",
});

const body = new TextEncoder().encode("id,amount\n1,42\n");
try {
  const put = await client.grantWrite({
    bucket: "demo",
    key: `public/report-${Date.now()}.csv`,
    ttl: ttl(300),
    contentType: "text/csv",
    size: { case: "contentLength", value: BigInt(body.length) },
    checksumSha256: createHash("sha256").update(body).digest("base64"),
    metadata: { owner: "team-a" },
    createOnly: true,
  });
  // Sends exactly the pinned headers; the store refuses any other value.
  const response = await upload(put, body);
  console.log(`PUT upload: HTTP ${response.status}`);

  const form = await client.grantWrite({
    bucket: "demo",
    key: `public/avatar-${Date.now()}.png`,
    contentType: "image/png",
    size: { case: "contentLengthRange", value: { minBytes: 1n, maxBytes: 1024n * 1024n } },
  });
  // In a browser: send form.formFields, then the file as form.fileField.
  console.log(`POST form: ${Object.keys(form.formFields).length} fields, file field "${form.fileField}"`);
} catch (error) {
  if (error instanceof GrantedRequestError) {
    console.error(`the store refused the upload: HTTP ${error.status} ${error.s3Code ?? ""}`);
  } else if (grpcCode(error) === Code.InvalidArgument) {
    for (const violation of fieldViolations(error)) {
      console.error(`${violation.field}: ${violation.description}`);
    }
  } else {
    throw error;
  }
  process.exitCode = 1;
}
