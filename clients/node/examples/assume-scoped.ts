/**
 * AssumeScoped, then use the credentials with @aws-sdk/client-s3: an S3 client
 * configured from the answer alone, limited to one prefix.
 *
 * With ./scripts/run-local.sh running:
 *   npm run build && node dist/examples/assume-scoped.js
 */
import { ListObjectsV2Command, PutObjectCommand } from "@aws-sdk/client-s3";

import { Access, createGrantsClient, ttl } from "../src/index.js";
import { s3ClientFromAssumeScoped } from "../src/s3.js";

const client = createGrantsClient({
  baseUrl: process.env["SG_URL"] ?? "http://127.0.0.1:50051",
  token: process.env["SG_TOKEN"] ?? "dev-local-token-0123456789",
});

const scoped = await client.assumeScoped({
  bucket: "demo",
  prefix: "public/",
  access: Access.READ_WRITE,
  list: true,
  duration: ttl(15 * 60),
});
const s3 = s3ClientFromAssumeScoped(scoped);
await s3.send(new PutObjectCommand({ Bucket: scoped.bucket, Key: `${scoped.prefix}from-node.txt`, Body: "hello" }));
const listed = await s3.send(new ListObjectsV2Command({ Bucket: scoped.bucket, Prefix: scoped.prefix }));
for (const object of listed.Contents ?? []) {
  console.log(object.Key);
}
s3.destroy();
