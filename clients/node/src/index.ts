/**
 * storage-grants-client: a TypeScript client for the storage-grants gRPC API
 * (`storagegrants.v1.GrantService`).
 *
 * - `client.ts`: {@link createGrantsClient}, the typed gRPC client, and {@link ttl};
 * - `http.ts`: {@link download} and {@link upload}, using a grant (or a multipart
 *   part grant) with `fetch`;
 * - `errors.ts`: the gRPC code, `google.rpc.BadRequest` field violations and retry
 *   hints of a failed call;
 * - `s3.ts` (imported as `storage-grants-client/s3`): `@aws-sdk/client-s3` clients
 *   from AssumeScoped, with credentials that refresh themselves (`scopedS3Client`,
 *   `scopedCredentials`) or an answer's fixed ones (`s3ClientFromAssumeScoped`);
 * - the generated messages (`GrantReadRequest`, `Access`, …) from the service's proto.
 */
export * from "./client.js";
export * from "./errors.js";
export * from "./http.js";
export * from "./gen/storagegrants/v1/grants_pb.js";
export { BadRequestSchema, RetryInfoSchema, type BadRequest, type RetryInfo } from "./gen/google/rpc/error_details_pb.js";
export { timestampDate } from "@bufbuild/protobuf/wkt";
