// Test identity for the browser test: an ES256 key pair, its JWKS file, and one JWT
// for a test caller, all with node:crypto (no JWT library).
//
// Usage: node jwt.mjs OUT_DIR ISSUER AUDIENCE SUBJECT [LIFETIME_SECONDS]
// Writes OUT_DIR/jwks.json (public key only) and OUT_DIR/session.jwt (the token, a
// secret: never printed). Prints nothing on success.
import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const [outDir, issuer, audience, subject, lifetimeArg] = process.argv.slice(2);
if (!outDir || !issuer || !audience || !subject) {
  console.error("usage: node jwt.mjs OUT_DIR ISSUER AUDIENCE SUBJECT [LIFETIME_SECONDS]");
  process.exit(2);
}
const lifetime = Number(lifetimeArg ?? 3600);

const b64url = (buf) => Buffer.from(buf).toString("base64url");

const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
const kid = `browser-test-${randomBytes(6).toString("hex")}`;
const jwk = publicKey.export({ format: "jwk" }); // { kty: "EC", crv: "P-256", x, y }
writeFileSync(
  join(outDir, "jwks.json"),
  JSON.stringify({ keys: [{ ...jwk, kid, alg: "ES256", use: "sig" }] }, null, 2),
);

const now = Math.floor(Date.now() / 1000);
const header = { alg: "ES256", typ: "JWT", kid };
const claims = { iss: issuer, aud: audience, sub: subject, iat: now, nbf: now - 5, exp: now + lifetime };
const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
// JWS ES256 signatures are r || s (IEEE P1363), not DER.
const signature = sign("sha256", Buffer.from(signingInput), { key: privateKey, dsaEncoding: "ieee-p1363" });
writeFileSync(join(outDir, "session.jwt"), `${signingInput}.${b64url(signature)}`, { mode: 0o600 });
