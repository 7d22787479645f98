/**
 * The environment the tests run in, set by scripts/clients-test.sh, which starts
 * s3s-fs (the store presigned URLs point at), moto (the STS AssumeScoped calls, whose
 * credentials work against moto's own S3) and the service, all on loopback:
 *
 *   SG_TEST_ADDR   host:port of the service (plaintext gRPC)
 *   SG_TEST_TOKEN  a development bearer token the service accepts
 *   DEMO_BUCKET    bucket of DEMO_KEY, in the store and in the STS's S3
 *   DEMO_KEY       an object the token's caller may read; the caller may read, write,
 *                  assume-read, assume-write and list under its folder
 *   DEMO_CONTENT   DEMO_KEY's exact content
 *   DENIED_KEY     a valid key in DEMO_BUCKET outside the caller's rules
 */
const NAMES = ["SG_TEST_ADDR", "SG_TEST_TOKEN", "DEMO_BUCKET", "DEMO_KEY", "DEMO_CONTENT", "DENIED_KEY"] as const;

export type Env = Record<(typeof NAMES)[number], string>;

export function readEnv(): Env {
  const missing = NAMES.filter((name) => !process.env[name]);
  if (missing.length > 0) {
    throw new Error(`missing environment variables: ${missing.join(", ")} (run scripts/clients-test.sh)`);
  }
  return Object.fromEntries(NAMES.map((name) => [name, process.env[name] as string])) as Env;
}
