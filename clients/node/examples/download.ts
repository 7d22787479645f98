/**
 * GrantRead, then download the object with plain `fetch`.
 *
 * With ./scripts/run-local.sh running:
 *   npm run build && node dist/examples/download.js [bucket] [key]
 * SG_URL (default http://127.0.0.1:50051) and SG_TOKEN (default: the local
 * development token) say where the service is and who is calling.
 */
import { createGrantsClient, download, timestampDate, ttl } from "../src/index.js";

const client = createGrantsClient({
  baseUrl: process.env["SG_URL"] ?? "http://127.0.0.1:50051",
  token: process.env["SG_TOKEN"] ?? "dev-local-token-0123456789",
});

const [bucket = "demo", key = "public/hello.txt"] = process.argv.slice(2);
const grant = await client.grantRead({ bucket, key, ttl: ttl(120) });
// The URL is a bearer credential: hand it to whoever needs the object, never log it.
console.log(`granted ${grant.grantId}, valid until ${timestampDate(grant.expiresAt!).toISOString()}`);

const response = await download(grant);
process.stdout.write(new Uint8Array(await response.arrayBuffer()));
process.stdout.write("\n");
