/**
 * The gRPC client: a typed `GrantService` client over HTTP/2 (gRPC protocol), with
 * the caller's bearer token sent on every call. One method per RPC: `grantRead`,
 * `grantWrite`, `assumeScoped`, and the multipart upload of one large object,
 * `startMultipartUpload`, `grantUploadParts`, `listUploadedParts`,
 * `completeMultipartUpload`, `abortMultipartUpload`.
 *
 * Requests are plain objects checked by TypeScript against the generated message
 * types, for example `client.grantRead({ bucket: "demo", key: "public/a.txt",
 * ttl: ttl(120) })`. Errors are `ConnectError`s carrying the gRPC code; see
 * `errors.ts` for their details.
 */
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, type GrpcTransportOptions } from "@connectrpc/connect-node";
import { durationFromMs, type Duration } from "@bufbuild/protobuf/wkt";

import type { MessageInitShape } from "@bufbuild/protobuf";

import {
  GrantService,
  type AbortMultipartUploadRequestSchema,
  type AssumeScopedRequestSchema,
  type CompleteMultipartUploadRequestSchema,
  type GrantReadRequestSchema,
  type GrantUploadPartsRequestSchema,
  type GrantWriteRequestSchema,
  type ListUploadedPartsRequestSchema,
  type StartMultipartUploadRequestSchema,
} from "./gen/storagegrants/v1/grants_pb.js";

/**
 * A `GrantService` client: `grantRead`, `grantWrite`, `assumeScoped`,
 * `startMultipartUpload`, `grantUploadParts`, `listUploadedParts`,
 * `completeMultipartUpload`, `abortMultipartUpload`.
 */
export type GrantsClient = Client<typeof GrantService>;

/** What `grantRead` accepts: a plain object with the request's fields, all optional. */
export type GrantReadInit = MessageInitShape<typeof GrantReadRequestSchema>;
/** What `grantWrite` accepts. The size is a oneof: `size: { case: "contentLength", value: 15n }`. */
export type GrantWriteInit = MessageInitShape<typeof GrantWriteRequestSchema>;
/** What `assumeScoped` accepts. */
export type AssumeScopedInit = MessageInitShape<typeof AssumeScopedRequestSchema>;
/** What `startMultipartUpload` accepts. */
export type StartMultipartUploadInit = MessageInitShape<typeof StartMultipartUploadRequestSchema>;
/** What `grantUploadParts` accepts: `parts: [{ partNumber: 1, contentLength: 5_242_880n }]` or `partRange: { first, last }`. */
export type GrantUploadPartsInit = MessageInitShape<typeof GrantUploadPartsRequestSchema>;
/** What `listUploadedParts` accepts. */
export type ListUploadedPartsInit = MessageInitShape<typeof ListUploadedPartsRequestSchema>;
/** What `completeMultipartUpload` accepts: `parts: [{ partNumber: 1, etag }]`. */
export type CompleteMultipartUploadInit = MessageInitShape<typeof CompleteMultipartUploadRequestSchema>;
/** What `abortMultipartUpload` accepts. */
export type AbortMultipartUploadInit = MessageInitShape<typeof AbortMultipartUploadRequestSchema>;

/**
 * The caller's credential: a fixed bearer token, or a function that returns the
 * current one (for example re-reading a Kubernetes projected service-account token,
 * which the kubelet rotates), called once per RPC.
 */
export type TokenSource = string | (() => string | Promise<string>);

/** Options of {@link createGrantsClient}. */
export interface GrantsClientOptions {
  /**
   * The service's address as a URL: `http://host:port` for plaintext gRPC (loopback,
   * or inside a mesh that adds mTLS), `https://host:port` for TLS.
   */
  baseUrl: string;
  /** Bearer token sent as `authorization: Bearer <token>`. Omit when identity is mTLS. */
  token?: TokenSource;
  /** Default deadline of each call in milliseconds (default 10 000). */
  timeoutMs?: number;
  /** Further interceptors, run after the one that adds the token. */
  interceptors?: Interceptor[];
  /**
   * Anything else `createGrpcTransport` accepts, such as `nodeOptions` with a client
   * certificate for mTLS.
   */
  transport?: Omit<GrpcTransportOptions, "baseUrl" | "interceptors" | "defaultTimeoutMs">;
}

/** Default deadline of a call: a grant is local work plus, at most, one STS call. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * Creates a typed client for `storagegrants.v1.GrantService`.
 *
 * The token never appears in an error message: interceptors only set the header.
 */
export function createGrantsClient(options: GrantsClientOptions): GrantsClient {
  const interceptors: Interceptor[] = [];
  if (options.token !== undefined) {
    interceptors.push(bearer(options.token));
  }
  interceptors.push(...(options.interceptors ?? []));
  const transport = createGrpcTransport({
    ...options.transport,
    baseUrl: options.baseUrl,
    interceptors,
    defaultTimeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  });
  return createClient(GrantService, transport);
}

/** An interceptor that sends `authorization: Bearer <token>`. */
export function bearer(token: TokenSource): Interceptor {
  return (next) => async (request) => {
    const value = typeof token === "function" ? await token() : token;
    request.header.set("authorization", `Bearer ${value}`);
    return next(request);
  };
}

/** A `google.protobuf.Duration` of whole seconds, for `ttl` and `duration` fields. */
export function ttl(seconds: number): Duration {
  if (!Number.isFinite(seconds)) {
    throw new RangeError("ttl: seconds must be a finite number");
  }
  return durationFromMs(seconds * 1000);
}
