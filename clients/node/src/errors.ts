/**
 * What a failed call says, as data: the gRPC code, the field violations of an
 * INVALID_ARGUMENT (`google.rpc.BadRequest`) and the retry hint of an UNAVAILABLE or
 * RESOURCE_EXHAUSTED (`google.rpc.RetryInfo`).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { durationMs } from "@bufbuild/protobuf/wkt";

import { BadRequestSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export { Code, ConnectError };

/** One bad field of a request: its proto name (`key`, `ttl`, …) and what to send instead. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** The gRPC code of an error thrown by a client call (`Code.Unknown` for anything else). */
export function grpcCode(error: unknown): Code {
  return ConnectError.from(error).code;
}

/**
 * The field violations of every `google.rpc.BadRequest` an error carries; empty when
 * there are none. INVALID_ARGUMENT errors of this service always carry at least one.
 */
export function fieldViolations(error: unknown): FieldViolation[] {
  return ConnectError.from(error)
    .findDetails(BadRequestSchema)
    .flatMap((badRequest) =>
      badRequest.fieldViolations.map((violation) => ({
        field: violation.field,
        description: violation.description,
      })),
    );
}

/**
 * How long the service asks the caller to wait before retrying, in milliseconds
 * (`google.rpc.RetryInfo`), or undefined when the error carries no hint.
 */
export function retryDelayMs(error: unknown): number | undefined {
  const [info] = ConnectError.from(error).findDetails(RetryInfoSchema);
  return info?.retryDelay ? durationMs(info.retryDelay) : undefined;
}
