// The test page's script: Uppy with @uppy/aws-s3 in its signing-server mode, pointed at
// the storage-grants HTTP gateway, plus the two other things a web app does with the
// gateway: a direct upload signed by `POST /v1/uploads` from the app's own JS, and
// click-time download links. run.mjs bundles it with esbuild and drives it.
import AwsS3 from "@uppy/aws-s3";
import Uppy from "@uppy/core";

const config = JSON.parse(document.getElementById("config").textContent);
const MiB = 1024 * 1024;

// @uppy/aws-s3 6.x calls `${companionEndpoint}/s3/...` with plain fetch, which sends
// cookies only to the page's own origin; so the page reaches the gateway through its
// own origin (`config.companionEndpoint`), as a web app behind one reverse proxy does.
const uppy = new Uppy({ autoProceed: false, allowMultipleUploadBatches: true });
uppy.use(AwsS3, {
  companionEndpoint: config.companionEndpoint,
  // multipart above one part's worth, in S3's smallest parts: a 6 MiB file is 2 parts
  shouldUseMultipart: (file) => (file.size ?? 0) > 5 * MiB,
  getChunkSize: () => 5 * MiB,
});

const events = [];
for (const name of ["upload-start", "upload-success", "upload-error", "s3-multipart:part-uploaded"]) {
  uppy.on(name, (file, detail) => {
    events.push({
      event: name,
      file: file?.name ?? (Array.isArray(file) ? file.map((f) => f.name).join(",") : undefined),
      detail:
        name === "upload-error"
          ? String(detail?.message ?? detail)
          : name === "s3-multipart:part-uploaded"
            ? { PartNumber: detail?.PartNumber }
            : name === "upload-success"
              ? { key: detail?.body?.key, status: detail?.status }
              : undefined,
    });
  });
}

// Uploads the files chosen in #files with Uppy; resolves with one entry per file.
window.uploadWithUppy = async () => {
  const input = document.getElementById("files");
  for (const file of input.files) {
    uppy.addFile({ name: file.name, type: file.type, data: file, source: "test" });
  }
  const result = await uppy.upload();
  const out = [];
  for (const f of result?.successful ?? []) {
    out.push({ name: f.name, size: f.size, ok: true, key: f.response?.body?.key, location: f.response?.body?.location });
  }
  for (const f of result?.failed ?? []) {
    out.push({ name: f.name, size: f.size, ok: false, error: String(f.error ?? "failed") });
  }
  return { files: out, events };
};

// A direct upload the app's own JS signs with the gateway, cross-origin, with the
// session cookie (`credentials: 'include'`): POST /v1/uploads, then the upload itself.
window.directUpload = async (key, text, contentType) => {
  const body = new TextEncoder().encode(text);
  const signRes = await fetch(`${config.gatewayOrigin}/v1/uploads`, {
    method: "POST",
    credentials: "include",
    headers: { "content-type": "application/json" },
    // GrantWrite's fields by their proto JSON names, as in the README's gRPC examples
    body: JSON.stringify({ bucket: config.bucket, key, contentType, contentLength: body.length }),
  });
  const signText = await signRes.text();
  if (!signRes.ok) return { ok: false, step: "sign", status: signRes.status, body: signText.slice(0, 500) };
  const grant = JSON.parse(signText);
  let upRes;
  if (grant.fields) {
    const form = new FormData();
    for (const [k, v] of Object.entries(grant.fields)) form.set(k, v);
    form.set("file", new Blob([body], { type: contentType }));
    upRes = await fetch(grant.url, { method: grant.method ?? "POST", body: form });
  } else {
    upRes = await fetch(grant.url, { method: grant.method ?? "PUT", headers: grant.headers ?? {}, body });
  }
  const upText = await upRes.text();
  if (!upRes.ok) return { ok: false, step: "upload", method: grant.method, status: upRes.status, body: upText.slice(0, 500) };
  return { ok: true, method: grant.method, status: upRes.status };
};

// Click-time links: the gateway's object route, with an attachment name or not.
window.renderLinks = (links) => {
  const list = document.getElementById("links");
  list.replaceChildren();
  for (const { id, key, download } of links) {
    const a = document.createElement("a");
    a.id = id;
    const path = key.split("/").map(encodeURIComponent).join("/");
    a.href = `${config.gatewayOrigin}/v1/objects/${encodeURIComponent(config.bucket)}/${path}` +
      (download ? `?download=${encodeURIComponent(download)}` : "");
    a.textContent = key;
    const li = document.createElement("li");
    li.append(a);
    list.append(li);
  }
};

window.pageReady = { uppyCore: Uppy.VERSION, awsS3: AwsS3.VERSION };
