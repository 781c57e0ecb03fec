#!/usr/bin/env bash
# tests/grpcweb/run.sh — ctest http.grpcweb_client: protobuf-ts's gRPC-Web
# transport (client.js, an implementation perfc did not write) calls a
# perfc-http-test-server over HTTP/1.1, binary and text formats.
#
# Room: tests/grpcweb. Needs node and node_modules here (scripts/bootstrap
# runs `npm ci` in this folder). Environment: NODE, SERVER (the
# perfc-http-test-server binary).
set -euo pipefail
: "${NODE:?}" "${SERVER:?}"
HERE=$(cd "$(dirname "$0")" && pwd)
if [ ! -d "$HERE/node_modules/@protobuf-ts/grpcweb-transport" ]; then
  echo "http.grpcweb_client: $HERE/node_modules is missing; run scripts/bootstrap" \
       "(it runs: npm ci --prefix tests/grpcweb)" >&2
  exit 1
fi
out=$(mktemp)
"$SERVER" --threads 2 >"$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do
  grep -q '^listening on ' "$out" && break
  kill -0 "$pid" 2>/dev/null || { echo "server exited" >&2; exit 1; }
  sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$out")
[ -n "$addr" ] || { echo "server did not start" >&2; exit 1; }
"$NODE" "$HERE/client.js" "http://$addr"
