#!/bin/sh
# Start tritonserver on the fraud-classifier model repository, with explicit model control.
#
# The one place that holds Triton's command line: docker/Dockerfile.triton copies this file
# into the image, and k8s/base mounts it from a ConfigMap that kustomize generates from it.
# Variables (the same names as serve/settings.py):
#   MODEL_REPO        s3://bucket/prefix (or a folder)                  required
#   AWS_ENDPOINT_URL  S3 endpoint for a non-AWS S3 service, scheme://host[:port]
#                     (no port: the scheme's default); unset = AWS       optional
#   MODEL_NAME        default fraud-classifier
#   TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT  default 8000 / 8001 / 8002
#   TRITON_API_KEY    key for HTTP inference, model loading, the admin APIs (below)  optional here;
#                     the Deployment requires it (Secret fraudml-triton-api)
#   TRITON_API_KEY_HEADER  the header that carries it, default fraudml-api-key
# Credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and, for
# temporary credentials, AWS_SESSION_TOKEN (a read-only identity is enough).
#
# Explicit control: Triton loads MODEL_NAME at start (the version config.pbtxt names) and again
# only when asked (POST /v2/repository/models/<name>/load): the reconciler beside it
# (serve/reconciler.py) asks whenever this pod should serve another version.
set -eu

: "${MODEL_REPO:?set MODEL_REPO to s3://bucket/prefix}"
MODEL_NAME="${MODEL_NAME:-fraud-classifier}"

# Triton names a custom S3 endpoint inside the repository URI: s3://http://host:port/bucket/prefix.
# It reads up to the first "/" as host:port, so a missing port would turn the bucket into one:
# the scheme's default port is written out, and an endpoint with a path is refused.
repository="$MODEL_REPO"
case "$MODEL_REPO" in
  s3://*)
    if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
      endpoint="${AWS_ENDPOINT_URL%/}"
      hostport="${endpoint#*://}"
      case "$endpoint" in
        http://*) default_port=80 ;;
        https://*) default_port=443 ;;
        *) default_port="" ;;
      esac
      case "$hostport" in
        */* | "") default_port="" ;;
      esac
      if [ -z "$default_port" ]; then
        echo "triton-entrypoint: AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL} must be http(s)://host[:port], without a path" >&2
        exit 2
      fi
      case "$hostport" in
        *:[0-9]*) ;;
        *) endpoint="${endpoint}:${default_port}" ;;
      esac
      repository="s3://${endpoint}/${MODEL_REPO#s3://}"
    fi
    ;;
esac

echo "triton-entrypoint: serving ${MODEL_NAME} from ${MODEL_REPO}${AWS_ENDPOINT_URL:+ at ${AWS_ENDPOINT_URL}}"

# Who may call what (docs/security.md, R8 and S2). With TRITON_API_KEY set (the Deployment
# reads it from the Secret fraudml-triton-api), Triton answers HTTP inference, and the
# model-repository (load/unload), shared-memory, trace and logging APIs of both protocols,
# only to requests carrying the header `${TRITON_API_KEY_HEADER}: <key>` (gRPC metadata
# `triton-grpc-protocol-${TRITON_API_KEY_HEADER}`); others are refused before their body is
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
  set -- "--http-restricted-api=inference,model-repository,shared-memory,trace,logging:${restriction}" \
    "--grpc-restricted-protocol=model-repository,shared-memory,trace,logging:${restriction}" "$@"
else
  echo "triton-entrypoint: TRITON_API_KEY is not set: HTTP inference is open to every caller" >&2
fi

# --disable-auto-complete-config: config.pbtxt is complete (one generator writes it), and
# skipping auto-completion saves a backend round trip at every load.
# summary_latencies: p50/p99 of request and queue time per pod (nv_inference_*_summary_us),
# what the Grafana dashboard shows.
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
  --metrics-config=summary_latencies=true \
  "$@"
