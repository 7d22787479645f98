/**
 * Using a grant over plain HTTP with `fetch`: download with a GrantRead answer, upload
 * with a GrantWrite answer (a PUT with its pinned headers, or a multipart POST form) or
 * with one part of a GrantUploadParts answer (a PUT, whose `etag` response header
 * completes the multipart upload).
 *
 * A presigned URL is a bearer credential, so nothing here ever puts one into an error
 * message: a failed request reports its HTTP status and the store's error code only.
 */
import type { GrantReadResponse, GrantWriteResponse } from "./gen/storagegrants/v1/grants_pb.js";

/** The HTTP part of a grant: what `fetch` needs. */
type HttpGrant = Pick<GrantReadResponse, "url" | "method" | "headers">;

/**
 * What {@link upload} takes: a GrantWrite answer, or one part (an `UploadPartGrant`) of
 * a GrantUploadParts answer, which is always a PUT and has no form.
 */
export type UploadGrant = HttpGrant & Partial<Pick<GrantWriteResponse, "formFields" | "fileField">>;

/** A request made with a grant that the store answered with a non-2xx status. */
export class GrantedRequestError extends Error {
  override readonly name = "GrantedRequestError";

  constructor(
    /** What was attempted, e.g. "PUT upload". */
    readonly what: string,
    /** The HTTP status (403: refused signature or pin, 412: create-only, …). */
    readonly status: number,
    /** The S3 error `<Code>` of the response body, when it has one. */
    readonly s3Code: string | undefined,
  ) {
    super(`${what} with the granted URL failed: HTTP ${status}${s3Code ? ` (${s3Code})` : ""}`);
  }
}

/** Options shared by {@link download} and {@link upload}. */
export interface GrantedRequestOptions {
  /** Aborts the request (default: a 30 s timeout). */
  signal?: AbortSignal;
}

const DEFAULT_HTTP_TIMEOUT_MS = 30_000;

/**
 * Downloads the object of a GrantRead answer: a GET of its URL with its headers.
 * Returns the response, whose body is unread; throws {@link GrantedRequestError}
 * unless the status is 2xx.
 */
export async function download(grant: HttpGrant, options: GrantedRequestOptions = {}): Promise<Response> {
  return send("GET download", grant.url, {
    method: grant.method || "GET",
    headers: grant.headers,
    signal: options.signal ?? AbortSignal.timeout(DEFAULT_HTTP_TIMEOUT_MS),
  });
}

/** Options of {@link upload}. */
export interface UploadOptions extends GrantedRequestOptions {
  /** File name sent with a POST form's file part (default: the last segment of the key). */
  filename?: string;
}

/** The body of an upload. */
export type UploadBody = Uint8Array | ArrayBuffer | Blob | string;

/**
 * Uploads `body` with a GrantWrite answer or one part of a GrantUploadParts answer and
 * returns the store's response; throws {@link GrantedRequestError} unless the status
 * is 2xx (412 when a create-only grant meets an existing object, 403 when a pin does
 * not match). A part's response carries the `etag` header to complete the upload with.
 *
 * - PUT: sends exactly the granted headers. `content-length` is set by `fetch` from
 *   the body, so a pinned one is compared with the body's size instead of sent.
 * - POST: sends a `multipart/form-data` body with every form field, then the file
 *   as `fileField`, last, as S3 requires, with its Content-Length.
 */
export async function upload(
  grant: UploadGrant,
  body: UploadBody,
  options: UploadOptions = {},
): Promise<Response> {
  const signal = options.signal ?? AbortSignal.timeout(DEFAULT_HTTP_TIMEOUT_MS);
  const blob = body instanceof Blob ? body : new Blob([body]);
  switch (grant.method) {
    case "PUT": {
      const headers: Record<string, string> = { ...grant.headers };
      const pinned = headers["content-length"];
      delete headers["content-length"];
      if (pinned !== undefined && pinned !== String(blob.size)) {
        throw new RangeError(`the grant pins Content-Length ${pinned}, the body has ${blob.size} bytes`);
      }
      return send("PUT upload", grant.url, { method: "PUT", headers, body: blob, signal });
    }
    case "POST": {
      if (!grant.fileField) {
        throw new TypeError("a POST grant without a file field");
      }
      const form = new FormData();
      for (const [name, value] of Object.entries(grant.formFields ?? {})) {
        form.append(name, value);
      }
      const filename = options.filename ?? defaultFilename(grant);
      form.append(grant.fileField, blob, filename);
      // Encoded up front rather than streamed: S3 wants a Content-Length on a POST
      // upload, which a streamed (chunked) FormData body does not have.
      const encoded = new Request("http://form.invalid/", { method: "POST", body: form });
      const contentType = encoded.headers.get("content-type") ?? "multipart/form-data";
      const bytes = new Uint8Array(await encoded.arrayBuffer());
      return send("POST form upload", grant.url, {
        method: "POST",
        headers: { "content-type": contentType },
        body: bytes,
        signal,
      });
    }
    default:
      throw new TypeError(`unknown upload method ${JSON.stringify(grant.method)}`);
  }
}

function defaultFilename(grant: UploadGrant): string {
  const key = Object.entries(grant.formFields ?? {}).find(([name]) => name.toLowerCase() === "key")?.[1];
  return key?.split("/").pop() || "upload";
}

async function send(what: string, url: string, init: RequestInit): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    // fetch's own errors may carry the request (and so the URL) as their cause: keep
    // only the kind of failure.
    throw new Error(`${what} with the granted URL failed: ${failureKind(error)}`);
  }
  if (!response.ok) {
    const text = await response.text().catch(() => "");
    throw new GrantedRequestError(what, response.status, s3ErrorCode(text));
  }
  return response;
}

function failureKind(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: { code?: unknown } }).cause;
    if (typeof cause?.code === "string") {
      return cause.code;
    }
    return error.name;
  }
  return "unknown error";
}

/** The `<Code>` of an S3 XML error body: the only part of it worth reporting. */
export function s3ErrorCode(body: string): string | undefined {
  return /<Code>([^<]{1,64})<\/Code>/.exec(body)?.[1];
}
