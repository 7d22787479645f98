/**
 * `@aws-sdk/client-s3` clients from AssumeScoped: configured from the answer alone,
 * with credentials that refresh themselves or with the answer's fixed ones.
 *
 * Imported as `storage-grants-client/s3`, so that callers who never use AssumeScoped
 * need not install the AWS SDK (an optional peer dependency).
 *
 * AssumeScoped credentials expire (`credentials.expiresAt`: 15 minutes to 1 hour after
 * they were made, often less when the service hands out cached ones). A client that
 * runs longer than that needs new ones:
 *
 * - {@link scopedS3Client} asks AssumeScoped itself and gives the SDK a credential
 *   provider ({@link scopedCredentials}) that asks again before the credentials
 *   expire, each time for `minRemainingMs` of life left;
 * - {@link s3ClientFromAssumeScoped} uses the answer's credentials as they are, unless
 *   `config.credentials` is given.
 *
 * While the service cannot answer, the refreshing credentials cost each S3 command
 * little: a refresh made while the current credentials may still be kept (more than
 * {@link KEEP_ON_FAILURE_MS} left) has a short deadline ({@link EARLY_REFRESH_TIMEOUT_MS}),
 * and after it fails the provider answers the current credentials without asking for
 * {@link FAILURE_BACKOFF_MS} (or the service's `RetryInfo` delay). In the last minute a
 * refresh has the client's full deadline and its failure is thrown, as before.
 */
import { S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";

import type { AssumeScopedInit, GrantsClient } from "./client.js";
import { retryDelayMs } from "./errors.js";
import type { AssumeScopedResponse } from "./gen/storagegrants/v1/grants_pb.js";

/**
 * The JavaScript SDK's refresh window: it calls a credential provider again when the
 * credentials it returned have less than this left (`@smithy/core`, `EXPIRATION_MS`).
 */
export const SDK_REFRESH_WINDOW_MS = 5 * 60_000;

/**
 * Least life the credentials of each AssumeScoped call of {@link scopedCredentials}
 * must have left: twice the SDK's 5-minute refresh window, so that a refresh never
 * gets back the credentials it replaces. Less than the shortest session (15 minutes).
 */
export const DEFAULT_MIN_REMAINING_MS = 10 * 60_000;

/** Credentials as the AWS SDK v3 takes them (`AwsCredentialIdentity`). */
export interface ScopedCredentialIdentity {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  /** When they stop working: the SDK calls the provider again 5 minutes before. */
  expiration: Date;
  accountId?: string;
}

/** Options of {@link scopedCredentials} and {@link scopedS3Client}. */
export interface ScopedCredentialsOptions {
  /**
   * Least life, in milliseconds, the credentials of each AssumeScoped call must have
   * left (`min_remaining`; default {@link DEFAULT_MIN_REMAINING_MS}). More than the
   * SDK's 5-minute refresh window (a `RangeError` otherwise), less than the longest session the scope may have
   * (the rule's `max_ttl`), or the service answers FAILED_PRECONDITION.
   */
  minRemainingMs?: number;
  /** An answer to the same request, returned by the first call instead of asking. */
  first?: AssumeScopedResponse;
  /**
   * Deadline, in milliseconds, of a refresh made while the current credentials may
   * still be kept (more than {@link KEEP_ON_FAILURE_MS} left); default
   * {@link EARLY_REFRESH_TIMEOUT_MS}. Closer to expiry a refresh has the client's own.
   */
  earlyRefreshTimeoutMs?: number;
  /**
   * After such a refresh fails, how long, in milliseconds, the provider answers the
   * current credentials without asking again; default {@link FAILURE_BACKOFF_MS}, or
   * the error's `RetryInfo` delay (between 1 second and 5 minutes) when it carries one.
   */
  failureBackoffMs?: number;
}

/**
 * Deadline of a refresh made while the current credentials may still be kept: a
 * service that hangs costs the S3 command that noticed this long, not the client's
 * whole deadline (10 s by default).
 */
export const EARLY_REFRESH_TIMEOUT_MS = 2_500;

/**
 * After a failed refresh while the current credentials may still be kept, how long the
 * provider answers them without calling AssumeScoped again (unless the error carries a
 * `RetryInfo` delay). Never within {@link KEEP_ON_FAILURE_MS} of expiry.
 */
export const FAILURE_BACKOFF_MS = 20_000;

const RETRY_DELAY_BOUNDS_MS = [1_000, 5 * 60_000] as const;

/** The credentials of an AssumeScoped answer, as the AWS SDK takes them. */
export function credentialsOf(response: AssumeScopedResponse): ScopedCredentialIdentity {
  const secrets = secretsOf(response);
  const expiresAt = response.credentials?.expiresAt;
  if (!expiresAt) {
    throw new TypeError("the AssumeScoped answer carries no expiresAt");
  }
  return {
    ...secrets,
    expiration: timestampDate(expiresAt),
    ...(response.accountId ? { accountId: response.accountId } : {}),
  };
}

/** The answer's three secrets; a `TypeError` when one is missing. */
function secretsOf(response: AssumeScopedResponse): {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
} {
  const credentials = response.credentials;
  if (!credentials?.accessKeyId || !credentials.secretAccessKey || !credentials.sessionToken) {
    throw new TypeError("the AssumeScoped answer carries no complete credentials");
  }
  return {
    accessKeyId: credentials.accessKeyId,
    secretAccessKey: credentials.secretAccessKey,
    sessionToken: credentials.sessionToken,
  };
}

/**
 * An AWS SDK v3 credential provider (for `credentials` of any client config) that
 * calls AssumeScoped through `client` with `request` and `minRemainingMs` of life left.
 * The SDK memoizes it by `expiration` and calls it again when the credentials have
 * less than 5 minutes left, so a long-running client always signs with live ones.
 * `client` (its transport) must stay usable while the provider is. A failed call
 * (a `ConnectError`) keeps the current credentials while they have more than a minute
 * left ({@link KEEP_ON_FAILURE_MS}), and rejects the S3 command that needed them after.
 *
 * While they may be kept, a refresh waits at most `earlyRefreshTimeoutMs` (2.5 s),
 * resolutions made while it runs go on with the current credentials, and after it
 * fails the provider answers them without asking for `failureBackoffMs` (20 s, or the
 * error's `RetryInfo` delay): the SDK's two resolutions per command cost one attempt,
 * and a hung service does not hold up every command. In the last minute every
 * resolution shares the one refresh in flight, with the client's full deadline.
 */
export function scopedCredentials(
  client: Pick<GrantsClient, "assumeScoped">,
  request: AssumeScopedInit,
  options: ScopedCredentialsOptions = {},
): () => Promise<ScopedCredentialIdentity> {
  const asked = withMinRemaining(request, options.minRemainingMs);
  const earlyTimeoutMs = options.earlyRefreshTimeoutMs ?? EARLY_REFRESH_TIMEOUT_MS;
  const backoffMs = options.failureBackoffMs ?? FAILURE_BACKOFF_MS;
  if (!(earlyTimeoutMs > 0) || !Number.isFinite(earlyTimeoutMs)) {
    throw new RangeError("earlyRefreshTimeoutMs must be a positive number of milliseconds");
  }
  if (!(backoffMs >= 0) || !Number.isFinite(backoffMs)) {
    throw new RangeError("failureBackoffMs must be a number of milliseconds, 0 or more");
  }
  let first = options.first;
  let last: ScopedCredentialIdentity | undefined;
  // The refresh under way, shared by the resolutions that need it; and until when
  // (performance.now(), not the SDK's clock) a failed early refresh is not tried again.
  let inFlight: Promise<ScopedCredentialIdentity> | undefined;
  let quietUntil: number | undefined;
  /** The current credentials when they may be kept after a failure (more than a minute left). */
  const keepable = (): ScopedCredentialIdentity | undefined =>
    last !== undefined && last.expiration.getTime() - Date.now() > KEEP_ON_FAILURE_MS ? last : undefined;

  const refresh = async (early: boolean): Promise<ScopedCredentialIdentity> => {
    try {
      const answer = await client.assumeScoped(asked, early ? { timeoutMs: earlyTimeoutMs } : undefined);
      last = credentialsOf(answer);
      quietUntil = undefined;
      return last;
    } catch (error) {
      // As botocore's advisory refresh: credentials that still work for a while are
      // used while the service cannot answer; asked again after the back-off.
      const current = keepable();
      if (current !== undefined) {
        quietUntil = performance.now() + backoffAfter(error, backoffMs);
        return current;
      }
      throw error;
    }
  };

  return async () => {
    if (first !== undefined) {
      const answer = first;
      first = undefined;
      last = credentialsOf(answer);
      return last;
    }
    const current = keepable();
    if (current !== undefined && (inFlight !== undefined || (quietUntil !== undefined && performance.now() < quietUntil))) {
      // Another resolution is refreshing, or one failed a moment ago: go on with these.
      return current;
    }
    if (inFlight === undefined) {
      inFlight = refresh(current !== undefined).finally(() => {
        inFlight = undefined;
      });
    }
    return inFlight;
  };
}

/** How long to go on without asking after `error`: its RetryInfo delay (bounded), else `fallbackMs`. */
function backoffAfter(error: unknown, fallbackMs: number): number {
  let hinted: number | undefined;
  try {
    hinted = retryDelayMs(error);
  } catch {
    hinted = undefined; // a hint that cannot be read is no hint
  }
  if (hinted === undefined || !Number.isFinite(hinted)) return fallbackMs;
  return Math.min(Math.max(hinted, RETRY_DELAY_BOUNDS_MS[0]), RETRY_DELAY_BOUNDS_MS[1]);
}

/**
 * A failed refresh keeps the current credentials while they have more than this left
 * (asked again after {@link FAILURE_BACKOFF_MS}); closer to expiry the failure is thrown.
 */
export const KEEP_ON_FAILURE_MS = 60_000;

/**
 * An S3 client whose credentials refresh themselves, for workers that outlive one
 * session: calls AssumeScoped through `client` with `request` (asking for
 * `minRemainingMs` of life left), configures the client from the answer as
 * {@link s3ClientFromAssumeScoped} does, with {@link scopedCredentials} as its
 * credential provider. `config` adds to or overrides the rest.
 */
export async function scopedS3Client(
  client: Pick<GrantsClient, "assumeScoped">,
  request: AssumeScopedInit,
  config: S3ClientConfig = {},
  options: Omit<ScopedCredentialsOptions, "first"> = {},
): Promise<S3Client> {
  const asked = withMinRemaining(request, options.minRemainingMs);
  const first = await client.assumeScoped(asked);
  credentialsOf(first); // a complete answer, checked before the client exists
  return s3ClientFromAssumeScoped(first, {
    credentials: scopedCredentials(client, asked, { ...options, first }),
    ...config,
  });
}

/**
 * Returns an S3 client for the bucket prefix of an AssumeScoped answer: its region,
 * its endpoint (when the service names one, e.g. an S3-compatible store), path-style
 * addressing when it asks for it, and its temporary credentials.
 *
 * The answer's credentials are fixed: they stop working at their `expiresAt` (15
 * minutes to 1 hour), and the SDK does not stop using them then (it signs with
 * expired credentials; the store answers `ExpiredToken`). For longer use, pass
 * `config.credentials` (e.g. {@link scopedCredentials}`(client, request, { first: response })`),
 * which is used instead, or use {@link scopedS3Client}.
 *
 * The credentials only work under `response.prefix` of `response.bucket`: use
 * `Bucket: response.bucket` and keys (or a listing `Prefix`) starting with
 * `response.prefix`. `config` adds to or overrides the rest (retries, request handler…).
 *
 * @throws TypeError when the answer carries no credentials and `config` none either.
 */
export function s3ClientFromAssumeScoped(response: AssumeScopedResponse, config: S3ClientConfig = {}): S3Client {
  const credentials = config.credentials ?? fixedCredentials(response);
  return new S3Client({
    region: response.region,
    ...(response.endpoint ? { endpoint: response.endpoint } : {}),
    forcePathStyle: response.forcePathStyle,
    ...config,
    credentials,
  });
}

/** The answer's own credentials; `expiration` only when it names one. */
function fixedCredentials(response: AssumeScopedResponse): S3ClientConfig["credentials"] {
  const expiresAt = response.credentials?.expiresAt;
  return {
    ...secretsOf(response),
    ...(expiresAt ? { expiration: timestampDate(expiresAt) } : {}),
  };
}

/** `request` with `minRemaining`, checked to be longer than the SDK's refresh window. */
function withMinRemaining(request: AssumeScopedInit, minRemainingMs = DEFAULT_MIN_REMAINING_MS): AssumeScopedInit {
  if (!Number.isFinite(minRemainingMs) || minRemainingMs <= SDK_REFRESH_WINDOW_MS) {
    // Less would give credentials inside the window: a refresh before every call.
    throw new RangeError("minRemainingMs must be more than the SDK's 5-minute refresh window (300000)");
  }
  return { ...request, minRemaining: durationFromMs(minRemainingMs) };
}
