#!/usr/bin/env bash
# Runs storage-grants locally against an embedded default: installs (first run only)
# and starts the local S3-compatible store on loopback, creates the demo bucket and
# object, builds the service, and runs it with the development config until Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/tools.sh

GRPC_PORT=${GRPC_PORT:-50051}
STORE_PORT=${STORE_PORT:-9014}
STS_PORT=${STS_PORT:-9015}
HTTP_PORT=${HTTP_PORT:-8080}
DATA_DIR=${DATA_DIR:-$PWD/.local/store}
# The local store's own key pair. It exists only on this machine's loopback store.
export AWS_ACCESS_KEY_ID=local-dev-access-key
export AWS_SECRET_ACCESS_KEY=local-dev-secret-key-0123456789
export AWS_REGION=us-east-1
TOKEN=dev-local-token-0123456789

ensure_s3s_fs >/dev/null
ensure_node_tools >/dev/null
python=$(ensure_python_venv)

for port in "$GRPC_PORT" "$HTTP_PORT" "$STORE_PORT" "$STS_PORT"; do
  if port_open 127.0.0.1 "$port"; then
    echo "port $port is in use; set GRPC_PORT / HTTP_PORT / STORE_PORT / STS_PORT to free ports" >&2
    exit 1
  fi
done

# The demo bucket and object: s3s-fs keeps a bucket as a directory and an object as a file.
mkdir -p "$DATA_DIR/demo/public"
printf 'hello from storage-grants\n' >"$DATA_DIR/demo/public/hello.txt"

echo "building storage-grants (the first build takes a few minutes)..." >&2
cargo build --quiet --bin storage-grants

store_pid=$(start_s3s_fs "$DATA_DIR" "$STORE_PORT" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$DATA_DIR.log")
sts_pid=""
trap 'stop_process "$sts_pid"; stop_process "$store_pid"' EXIT
# moto is the local STS for AssumeScoped. Its credentials work against its own S3
# (not s3s-fs), so the service hands out moto's endpoint with them, and the demo
# bucket exists there too.
sts_pid=$(start_moto "$STS_PORT" "$DATA_DIR.moto.log")
"$python" - "$STS_PORT" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id="local", aws_secret_access_key="local")
s3.create_bucket(Bucket="demo")
s3.put_object(Bucket="demo", Key="public/hello.txt", Body=b"hello from storage-grants (moto)\n")
PY

cat <<MSG

  storage-grants (development mode)
    gRPC address   127.0.0.1:$GRPC_PORT   (health, reflection, storagegrants.v1.GrantService)
    HTTP gateway   http://127.0.0.1:$HTTP_PORT   (click-time links, upload signing, SDK credentials)
    dev token      $TOKEN   (caller dev:demo; may read and write under demo/public/)
    local store    http://127.0.0.1:$STORE_PORT   (s3s-fs, data in $DATA_DIR)
    local STS      http://127.0.0.1:$STS_PORT   (moto; AssumeScoped credentials work against its S3)

  Try it, in another terminal:

    npx buf curl --protocol grpc --http2-prior-knowledge \\
      -H 'authorization: Bearer $TOKEN' \\
      -d '{"bucket": "demo", "key": "public/hello.txt", "ttl": "120s"}' \\
      http://127.0.0.1:$GRPC_PORT/storagegrants.v1.GrantService/GrantRead

  then download with the returned "url" using any HTTP client, e.g. curl "<url>".

  Scoped credentials for the prefix (configure any S3 SDK from the response):

    npx buf curl --protocol grpc --http2-prior-knowledge \\
      -H 'authorization: Bearer $TOKEN' \\
      -d '{"bucket": "demo", "prefix": "public/", "access": "ACCESS_READ", "list": true}' \\
      http://127.0.0.1:$GRPC_PORT/storagegrants.v1.GrantService/AssumeScoped

  A click-time link through the HTTP gateway (302 to a fresh presigned GET):

    curl -L -H 'authorization: Bearer $TOKEN' http://127.0.0.1:$HTTP_PORT/v1/objects/demo/public/hello.txt

  Ctrl-C stops the service, the store and the local STS.

  The local servers stand in for S3 and STS, with differences (README, "What the local
  servers do not check"): moto evaluates no session policy, so scoped credentials work
  outside their prefix here; s3s-fs keeps a PUT body it refused for a checksum.

MSG

STORAGE_GRANTS_LISTEN="127.0.0.1:$GRPC_PORT" \
STORAGE_GRANTS_HTTP__LISTEN="127.0.0.1:$HTTP_PORT" \
STORAGE_GRANTS_HTTP__ALLOWED_ORIGINS="[\"http://127.0.0.1:$HTTP_PORT\", \"http://localhost:$HTTP_PORT\"]" \
STORAGE_GRANTS_STORAGE__ENDPOINT="http://127.0.0.1:$STORE_PORT" \
STORAGE_GRANTS_STS__ENDPOINT="http://127.0.0.1:$STS_PORT" \
STORAGE_GRANTS_STS__STORAGE_ENDPOINT="http://127.0.0.1:$STS_PORT" \
  cargo run --quiet --locked --bin storage-grants -- --config dev/config.toml serve
