#!/bin/sh
# interop_pair.sh BIN_DIR CASE TLS [CLIENT] — starts build/bin/interop-server
# on a free port (plaintext when TLS is "false", with the build tree's test
# certificates when "true"), runs build/bin/CLIENT (default interop-client;
# interop-client-cpp is the libgrpc++ one, same flags) for one grpc
# interop test case against it, and stops the server. Exit status: the
# client's (0 = the case passed).
# Room: tests/interop. Registered per case by tests/interop/CMakeLists.txt.
set -u
bin=${1:?usage: interop_pair.sh BIN_DIR CASE TLS}
case_name=${2:?test case}
tls=${3:-false}
client=${4:-interop-client}
out=$(mktemp)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$out"' EXIT
# CTest names each copy's transport; unset: the server's default.
"$bin/interop-server" --port 0 --use_tls "$tls" \
  ${PERFC_TEST_TRANSPORT:+--transport "$PERFC_TEST_TRANSPORT"} >"$out" 2>&1 &
pid=$!
port=
# Up to 30 s: a loaded CI machine can take seconds to start a process.
for _ in $(seq 1 600); do
  port=$(sed -n 's/^interop-server: listening on port \([0-9]*\).*/\1/p' "$out")
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$port" ]; then
  echo "interop-server did not start:" >&2
  cat "$out" >&2
  exit 1
fi
# Over TLS the client dials 127.0.0.1 and checks the certificate's
# localhost name through the override, as grpc's runners do.
"$bin/$client" --server_host 127.0.0.1 --server_port "$port" \
  --test_case "$case_name" --use_tls "$tls" --server_host_override localhost
