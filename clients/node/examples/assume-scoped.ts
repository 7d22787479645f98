/**
 * AssumeScoped, then use the credentials with @aws-sdk/client-s3: an S3 client
 * configured from the answer alone, limited to one prefix, whose credentials refresh
 * themselves (the SDK calls AssumeScoped again 5 minutes before they expire, asking
 * for 10 minutes of life left).
 *
 * With ./scripts/run-local.sh running:
 *   npm run build && node dist/examples/assume-scoped.js
 */
import { ListObjectsV2Command, PutObjectCommand } from "@aws-sdk/client-s3";

import { Access, createGrantsClient, ttl } from "../src/index.js";
import { scopedS3Client } from "../src/s3.js";

const client = createGrantsClient({
  baseUrl: process.env["SG_URL"] ?? "http://127.0.0.1:50051",
  token: process.env["SG_TOKEN"] ?? "dev-local-token-0123456789",
});

const s3 = await scopedS3Client(client, {
  bucket: "demo",
  prefix: "public/",
  access: Access.READ_WRITE,
  list: true,
  duration: ttl(15 * 60),
});
await s3.send(new PutObjectCommand({ Bucket: "demo", Key: "public/from-node.txt", Body: "hello" }));
const listed = await s3.send(new ListObjectsV2Command({ Bucket: "demo", Prefix: "public/" }));
for (const object of listed.Contents ?? []) {
  console.log(object.Key);
}
s3.destroy();
