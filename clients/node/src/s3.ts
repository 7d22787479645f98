/**
 * An `@aws-sdk/client-s3` client configured from an AssumeScoped answer alone.
 *
 * Imported as `storage-grants-client/s3`, so that callers who never use AssumeScoped
 * need not install the AWS SDK (an optional peer dependency).
 */
import { S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import type { AssumeScopedResponse } from "./gen/storagegrants/v1/grants_pb.js";

/**
 * Returns an S3 client for the bucket prefix of an AssumeScoped answer: its region,
 * its endpoint (when the service names one, e.g. an S3-compatible store), path-style
 * addressing when it asks for it, and its temporary credentials, which the SDK stops
 * using at their `expires_at`.
 *
 * The credentials only work under `response.prefix` of `response.bucket`: use
 * `Bucket: response.bucket` and keys (or a listing `Prefix`) starting with
 * `response.prefix`. `config` adds to or overrides the rest (retries, request handler…).
 *
 * @throws TypeError when the answer carries no credentials.
 */
export function s3ClientFromAssumeScoped(response: AssumeScopedResponse, config: S3ClientConfig = {}): S3Client {
  const credentials = response.credentials;
  if (!credentials?.accessKeyId || !credentials.secretAccessKey || !credentials.sessionToken) {
    throw new TypeError("the AssumeScoped answer carries no complete credentials");
  }
  return new S3Client({
    region: response.region,
    ...(response.endpoint ? { endpoint: response.endpoint } : {}),
    forcePathStyle: response.forcePathStyle,
    ...config,
    credentials: {
      accessKeyId: credentials.accessKeyId,
      secretAccessKey: credentials.secretAccessKey,
      sessionToken: credentials.sessionToken,
      ...(credentials.expiresAt ? { expiration: timestampDate(credentials.expiresAt) } : {}),
    },
  });
}
