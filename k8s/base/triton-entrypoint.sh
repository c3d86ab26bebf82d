#!/bin/sh
# Start tritonserver on the fraud-classifier model repository, with explicit model control.
#
# The one place that holds Triton's command line: docker/Dockerfile.triton copies this file
# into the image, and k8s/base mounts it from a ConfigMap that kustomize generates from it.
# Variables (the same names as serve/settings.py):
#   MODEL_REPO        s3://bucket/prefix (or a folder)                  required
#   AWS_ENDPOINT_URL  S3 endpoint for a non-AWS S3 service; unset = AWS  optional
#   MODEL_NAME        default fraud-classifier
#   TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT  default 8000 / 8001 / 8002
#   TRITON_API_KEY    key for HTTP inference and the admin APIs (below)  optional here;
#                     the Deployment requires it (Secret fraudml-triton-api)
#   TRITON_API_KEY_HEADER  the header that carries it, default fraudml-api-key
# Credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION.
#
# Explicit control: Triton loads MODEL_NAME at start and again only when asked
# (POST /v2/repository/models/<name>/load, `python -m serve.models load`); the version it
# serves is the one config.pbtxt names (version_policy specific), so a restarted pod serves
# exactly what the running ones serve.
set -eu

: "${MODEL_REPO:?set MODEL_REPO to s3://bucket/prefix}"
MODEL_NAME="${MODEL_NAME:-fraud-classifier}"

# Triton names a custom S3 endpoint inside the repository URI: s3://http://host:port/bucket/prefix
case "$MODEL_REPO" in
  s3://*)
    if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
      repository="s3://${AWS_ENDPOINT_URL%/}/${MODEL_REPO#s3://}"
    else
      repository="$MODEL_REPO"
    fi
    ;;
  *) repository="$MODEL_REPO" ;;
esac

echo "triton-entrypoint: serving ${MODEL_NAME} from ${MODEL_REPO}${AWS_ENDPOINT_URL:+ at ${AWS_ENDPOINT_URL}}"

# Who may call what (docs/security.md, "One HTTP request can abort Triton"). With
# TRITON_API_KEY set (the Deployment reads it from the Secret fraudml-triton-api), Triton
# answers HTTP inference, and the shared-memory, trace and logging APIs of both protocols,
# plus gRPC model-repository, only to requests carrying the header
# `${TRITON_API_KEY_HEADER}: <key>`; others get 403 / PERMISSION_DENIED before their body is
# read. The HTTP JSON front end is the one that sizes buffers from a request's declared
# shape; gRPC sizes them from the bytes received, so gRPC inference, health, metadata, model
# config and statistics stay open: untrusted callers use gRPC.
TRITON_API_KEY_HEADER="${TRITON_API_KEY_HEADER:-fraudml-api-key}"
if [ -n "${TRITON_API_KEY:-}" ]; then
  case "$TRITON_API_KEY$TRITON_API_KEY_HEADER" in
    *[!A-Za-z0-9_-]*)
      echo "triton-entrypoint: TRITON_API_KEY and TRITON_API_KEY_HEADER may hold only A-Z a-z 0-9 _ - (e.g. openssl rand -hex 32)" >&2
      exit 2
      ;;
  esac
  restriction="${TRITON_API_KEY_HEADER}=${TRITON_API_KEY}"
  set -- "--http-restricted-api=inference,shared-memory,trace,logging:${restriction}" \
    "--grpc-restricted-protocol=model-repository,shared-memory,trace,logging:${restriction}" "$@"
else
  echo "triton-entrypoint: TRITON_API_KEY is not set: HTTP inference is open to every caller" >&2
fi

# --disable-auto-complete-config: config.pbtxt is complete (one generator writes it), and
# skipping auto-completion saves a backend round trip at every load.
exec tritonserver \
  --model-repository="$repository" \
  --model-control-mode=explicit \
  --load-model="$MODEL_NAME" \
  --disable-auto-complete-config \
  --strict-readiness=true \
  --exit-on-error=true \
  --http-port="${TRITON_HTTP_PORT:-8000}" \
  --grpc-port="${TRITON_GRPC_PORT:-8001}" \
  --metrics-port="${TRITON_METRICS_PORT:-8002}" \
  --allow-metrics=true \
  "$@"
