#!/usr/bin/env bash
# tests/generator/run.sh MODE — the generator's end-to-end checks, run by
# CTest (tests/generator/CMakeLists.txt sets the environment below).
#
# Room: tests/generator. Writes only under $WORK; with UPDATE=1 the golden
# mode rewrites tests/generator/golden/ (that is how goldens are refreshed).
#
#   golden     generate every .proto in protos/ and compare with golden/out
#              byte for byte, and their OpenAPI documents (openapi=DIR)
#              with golden/openapi
#   errors     every case that must fail, compared with golden/errors/*.txt
#   templates  templates=DIR overrides one template, the rest stay built in
#   stubs      stubs=DIR writes scaffolding once and never overwrites it
#   compile    all generated code (+ protoc-c's + scaffolding) compiles with
#              -Wall -Wextra -Werror under $CC
#   valgrind   the plugin on the 40-method proto leaks and errs nothing
#   install    `cmake --install` into a scratch prefix, then an out-of-tree
#              project (consumer/) with find_package(perfc) and
#              perfc_generate(), a program built from pkg-config alone, and
#              a scaffolded server (consumer/app) built with pkg-config and
#              --as-needed, started and asked for health and reflection;
#              and a scaffolded cached service (consumer/app/cached.proto)
#              built with pkg-config perfc-config perfc-data, refused
#              without Redis, then started with a redis-server and shown to
#              answer repeats from its cache
#   example    examples/user-service's proto: output equals golden/example
#              (UPDATE=1 rewrites it), it and its scaffolding compile with
#              -Werror under $CC, and the scaffolded main links against the
#              built runtime, answers --help and a bad flag, serves with the
#              sample configuration and stops on SIGTERM
#
# Environment: PROTOC, PLUGIN (protoc-gen-perfc), PROTOC_GEN_C, SRC (this
# directory), ROOT (project source), WKT_INC (perfc_wkt's generated
# headers), WORK (scratch directory), CC (compile mode), UPDATE=1 (golden),
# BUILD (perfc's build directory, install mode).
set -euo pipefail
mode=$1
: "${PROTOC:?}" "${PLUGIN:?}" "${SRC:?}" "${ROOT:?}" "${WORK:?}"
PROTOC_GEN_C=${PROTOC_GEN_C:-$(command -v protoc-gen-c)}
GOOD_PROTOS=(nopkg.proto deep.proto common/types.proto api/v1/user.proto
             nested.proto proto2ext.proto keywords.proto big.proto
             cpackage.proto http.proto openapi.proto)
# protobuf-c's own protobuf-c/protobuf-c.proto (for cpackage.proto).
PROTOBUF_C_PROTO_DIR=${PROTOBUF_C_PROTO_DIR:-/usr/include}

rm -rf "$WORK/$mode"
W=$WORK/$mode
mkdir -p "$W"

# protoc with perfc's plugin and options.proto on the import path. Runs in
# the directory of the protos so file names in messages stay relative.
perfc_protoc() {
  "$PROTOC" -I. -I"$ROOT/proto" -I"$PROTOBUF_C_PROTO_DIR" --plugin=protoc-gen-perfc="$PLUGIN" \
    --plugin=protoc-gen-c="$PROTOC_GEN_C" "$@"
}

generate_good() { # OUT_PERFC OUT_C [perfc parameter]
  mkdir -p "$1" "$2"
  local param=${3:+$3:}
  (cd "$SRC/protos" && perfc_protoc --perfc_out="$param$1" --c_out="$2" \
    "${GOOD_PROTOS[@]}")
}

case "$mode" in
golden)
  generate_good "$W/perfc" "$W/c" "openapi=$W/openapi"
  if [ "${UPDATE:-0}" = 1 ]; then
    rm -rf "$SRC/golden/out" "$SRC/golden/openapi"
    cp -r "$W/perfc" "$SRC/golden/out"
    cp -r "$W/openapi" "$SRC/golden/openapi"
    echo "golden/out and golden/openapi updated"
    exit 0
  fi
  diff -r -u "$SRC/golden/out" "$W/perfc"
  diff -r -u "$SRC/golden/openapi" "$W/openapi"
  # Only files with google.api.http routes get a document.
  test "$(find "$W/openapi" -name '*.openapi.json' | wc -l)" = 2
  ;;
errors)
  fail=0
  check() { # NAME DIR PROTO [PARAM]
    local name=$1 dir=$2 proto=$3 param=${4:-} got rc
    set +e
    got=$(cd "$dir" && perfc_protoc --perfc_out="${param:+$param:}$W" "$proto" 2>&1)
    rc=$?
    set -e
    if [ "$rc" = 0 ]; then
      echo "FAIL $name: protoc succeeded, expected an error"; fail=1; return
    fi
    if [ "${UPDATE:-0}" = 1 ]; then
      printf '%s\n' "$got" >"$SRC/golden/errors/$name.txt"
      return
    fi
    if ! diff -u "$SRC/golden/errors/$name.txt" <(printf '%s\n' "$got"); then
      echo "FAIL $name: error text differs"; fail=1
    fi
  }
  mkdir -p "$SRC/golden/errors"
  for p in "$SRC"/errors/*.proto; do
    n=$(basename "$p" .proto)
    check "$n" "$SRC/errors" "$n.proto"
  done
  check unknown_param "$SRC/protos" nopkg.proto "bogus=1,stubs=x"
  check param_without_value "$SRC/protos" nopkg.proto "templates"
  check bad_template "$SRC/protos" nopkg.proto "templates=../templates_bad"
  check templates_not_a_dir "$SRC/protos" nopkg.proto "templates=/nonexistent/perfc"
  # What OpenAPI 3.0 cannot describe: refused only when openapi= is asked
  # for (the same protos generate without it), and no document is written.
  for p in "$SRC"/errors_openapi/*.proto; do
    n=$(basename "$p" .proto)
    (cd "$SRC/errors_openapi" && perfc_protoc --perfc_out="$W" "$n.proto") ||
      { echo "FAIL openapi_$n: fails even without openapi="; fail=1; }
    check "openapi_$n" "$SRC/errors_openapi" "$n.proto" "openapi=$W/oa"
  done
  if [ -e "$W/oa" ]; then echo "FAIL: a failed run wrote $W/oa"; fail=1; fi
  check openapi_without_dir "$SRC/protos" http.proto "openapi"
  exit $fail
  ;;
templates)
  (cd "$SRC/protos" && perfc_protoc \
    --perfc_out="templates=$SRC/templates_custom:$W" nopkg.proto)
  diff -u "$SRC/golden/custom/nopkg.perfc.h" "$W/nopkg.perfc.h"
  # The .c template was not overridden: it must equal the built-in output.
  diff -u "$SRC/golden/out/nopkg.perfc.c" "$W/nopkg.perfc.c"
  ;;
stubs)
  (cd "$SRC/protos" && perfc_protoc --perfc_out="stubs=$W/stubs:$W" \
    api/v1/user.proto)
  test -f "$W/stubs/user_handlers.c" && test -f "$W/stubs/user_main.c"
  grep -q 'PERFC_STATUS_UNIMPLEMENTED' "$W/stubs/user_handlers.c"
  echo "/* the user's edit */" >>"$W/stubs/user_handlers.c"
  cp "$W/stubs/user_handlers.c" "$W/expected.c"
  (cd "$SRC/protos" && perfc_protoc --perfc_out="stubs=$W/stubs:$W" \
    api/v1/user.proto 2>"$W/stderr")
  cmp "$W/expected.c" "$W/stubs/user_handlers.c"
  grep -q 'user_handlers.c exists' "$W/stderr"
  # Nothing is missing yet: no note beyond "left unchanged".
  if grep -q 'no handler\|not registered' "$W/stderr"; then
    cat "$W/stderr"; echo "notes about nothing missing"; exit 1
  fi
  # The proto grows a method and a service: regenerating names each method
  # the old handlers table lacks and the service the old main does not
  # register, once each, and still rewrites nothing.
  mkdir -p "$W/grown/api/v1"
  cp -r "$SRC/protos/common" "$W/grown/"
  sed -e 's/^  rpc Now(google.protobuf.Empty) returns (google.protobuf.Timestamp);/&\
  rpc Ping(google.protobuf.Empty) returns (google.protobuf.Empty);/' \
    -e '$a\
service AuditService {\
  rpc Record(google.protobuf.Empty) returns (google.protobuf.Empty);\
}' "$SRC/protos/api/v1/user.proto" >"$W/grown/api/v1/user.proto"
  cp "$W/stubs/user_main.c" "$W/expected_main.c"
  (cd "$W/grown" && perfc_protoc --perfc_out="stubs=$W/stubs:$W" \
    api/v1/user.proto 2>"$W/stderr")
  cmp "$W/expected.c" "$W/stubs/user_handlers.c"
  cmp "$W/expected_main.c" "$W/stubs/user_main.c"
  cat >"$W/want-notes" <<NOTES
protoc-gen-perfc: $W/stubs/user_handlers.c exists and is yours; left unchanged
protoc-gen-perfc: $W/stubs/user_main.c exists and is yours; left unchanged
protoc-gen-perfc: $W/stubs/user_handlers.c: /api.v1.UserService/Ping has no handler (no .ping in api__v1__user_service__perfc_handlers): answers UNIMPLEMENTED
protoc-gen-perfc: $W/stubs/user_handlers.c: /api.v1.AuditService/Record has no handler (no .record in api__v1__audit_service__perfc_handlers): answers UNIMPLEMENTED
protoc-gen-perfc: $W/stubs/user_main.c: service api.v1.AuditService is not registered (no api__v1__audit_service__perfc_register call): it is not served; add api__v1__audit_service__perfc_register(srv, &api__v1__audit_service__perfc_handlers, NULL)
NOTES
  diff -u "$W/want-notes" "$W/stderr"
  # A run that fails writes no scaffolding at all.
  (cd "$SRC/errors" && ! perfc_protoc --perfc_out="stubs=$W/failed:$W" \
    bad_cache_key.proto 2>/dev/null)
  test ! -e "$W/failed"
  ;;
compile)
  : "${CC:?}" "${WKT_INC:?}"
  # Scaffolding for every file with services comes along (stubs=DIR).
  generate_good "$W/perfc" "$W/c" "stubs=$W/stubs"
  n=0
  while IFS= read -r f; do
    "$CC" -std=c11 -Wall -Wextra -Werror -c -I"$W/perfc" -I"$W/c" \
      -I"$ROOT/runtime/include" -I"$WKT_INC" "$f" -o "$W/obj.o"
    n=$((n + 1))
  done < <(find "$W/perfc" "$W/c" "$W/stubs" -name '*.c' | sort)
  echo "$CC: $n files compiled"
  ;;
valgrind)
  # The wrapper notes valgrind's verdict in a file, because protoc turns any
  # plugin failure into its own error and an error case fails anyway.
  cat >"$W/plugin" <<WRAP
#!/bin/sh
valgrind --quiet --error-exitcode=99 --leak-check=full \
  --errors-for-leak-kinds=all --log-file="$W/valgrind.%p.log" "$PLUGIN"
rc=\$?
[ \$rc = 99 ] && echo "valgrind found errors" >>"$W/verdict"
exit \$rc
WRAP
  chmod +x "$W/plugin"
  PLUGIN=$W/plugin
  (cd "$SRC/protos" && perfc_protoc --perfc_out="stubs=$W/stubs:$W" big.proto)
  (cd "$SRC/errors" && ! perfc_protoc --perfc_out="$W" bad_cache_key.proto 2>/dev/null)
  (cd "$SRC/protos" && ! perfc_protoc --perfc_out="bogus=1:$W" big.proto 2>/dev/null)
  # HTTP rules: every form compiled, and failures mid-template, in a
  # variable, in the body and in an additional binding (freed on each path).
  (cd "$SRC/protos" && perfc_protoc --perfc_out="openapi=$W/oa:$W" http.proto openapi.proto)
  (cd "$SRC/errors_openapi" && ! perfc_protoc --perfc_out="openapi=$W/oa:$W" custom_kind.proto 2>/dev/null)
  for e in http_unclosed http_nested_var http_var_message http_body_unknown \
           http_binding_error http_conflict; do
    (cd "$SRC/errors" && ! perfc_protoc --perfc_out="$W" $e.proto 2>/dev/null)
  done
  if [ -e "$W/verdict" ]; then
    cat "$W"/valgrind.*.log
    exit 1
  fi
  echo "valgrind: 11 runs clean"
  ;;
install)
  : "${BUILD:?}"
  cmake --install "$BUILD" --prefix "$W/prefix" >"$W/install.log"
  cmake -S "$SRC/consumer" -B "$W/consumer" -DCMAKE_PREFIX_PATH="$W/prefix" \
    >"$W/configure.log"
  cmake --build "$W/consumer" >"$W/build.log"
  "$W/consumer/consumer" | tee "$W/out.txt"
  grep -qx 'service hello.v1.Greeter from hello/v1/hello.proto, 2 methods, descriptor [0-9]* bytes' "$W/out.txt"
  grep -qx 'method /hello.v1.Greeter/SayHello kind 0 timeout 2000 idempotent 1 input hello.v1.HelloRequest' "$W/out.txt"
  grep -qx 'method /hello.v1.Greeter/Chat kind 3 timeout 0 idempotent 0 input hello.v1.HelloRequest' "$W/out.txt"
  test ! -e "$W/consumer/perfc_gen/common/v1/money.perfc.h"
  export PKG_CONFIG_PATH=$W/prefix/lib/pkgconfig
  # shellcheck disable=SC2046
  "${CC:-cc}" -std=c11 -Wall -Wextra -Werror "$SRC/consumer/pkgconfig.c" \
    $(pkg-config --cflags perfc) $(pkg-config --libs perfc) \
    -Wl,-rpath,"$W/prefix/lib" -o "$W/pkgconfig-app"
  "$W/pkgconfig-app"
  # What clients generate their stubs from: the services perfc serves.
  P=$W/prefix
  protodir=$(pkg-config --variable=protodir perfc)
  for f in perfc/options.proto grpc/health/v1/health.proto \
           grpc/reflection/v1/reflection.proto \
           grpc/reflection/v1alpha/reflection.proto; do
    test -f "$P/share/perfc/proto/$f" && test -f "$protodir/$f" ||
      { echo "not installed: share/perfc/proto/$f"; exit 1; }
  done
  # Only perfc's include folder: gRPC's -DNOMINMAX (Requires.private) was
  # leaking into every user's compile line.
  cflags=$(pkg-config --cflags perfc)
  case "$cflags" in *NOMINMAX*|*grpc*)
    echo "pkg-config --cflags perfc leaks: $cflags"; exit 1 ;;
  esac
  # libperfc finds libperfc-wkt beside it, in any prefix.
  readelf -d "$P/lib/libperfc.so" | grep -q 'RUNPATH.*\[\$ORIGIN\]' ||
    { readelf -d "$P/lib/libperfc.so"; echo "libperfc.so: no RUNPATH \$ORIGIN"; exit 1; }
  # A newcomer's server: scaffolding from the installed plugin, generated
  # files in their own folder, built with pkg-config and -Wl,--as-needed
  # (so it does not link libperfc-wkt itself: only libperfc's RUNPATH can
  # find it), and started, then asked for health and reflection.
  A=$W/app
  mkdir -p "$A/gen"
  (cd "$SRC/consumer/app" && "$PROTOC" -I. -I"$protodir" \
    --plugin=protoc-gen-perfc="$P/bin/protoc-gen-perfc" \
    --plugin=protoc-gen-c="$PROTOC_GEN_C" \
    --c_out="$A/gen" --perfc_out="stubs=$A:$A/gen" greeter.proto)
  # shellcheck disable=SC2046
  "${CC:-cc}" -std=c11 -Wall -Wextra -Werror -I"$A/gen" "$A/greeter_main.c" \
    "$A/greeter_handlers.c" "$A/gen/greeter.perfc.c" "$A/gen/greeter.pb-c.c" \
    $(pkg-config --cflags --libs perfc-config) -Wl,--as-needed \
    -Wl,-rpath,"$(pkg-config --variable=libdir perfc)" -o "$A/greeter"
  if readelf -d "$A/greeter" | grep -q 'NEEDED.*libperfc-wkt'; then
    echo "greeter links libperfc-wkt itself: the test would prove nothing"
    exit 1
  fi
  "$A/greeter" --help >"$A/help.txt"
  grep -q '^usage: greeter \[--config FILE\]' "$A/help.txt" ||
    { cat "$A/help.txt"; echo "usage does not name the program"; exit 1; }
  "$A/greeter" --listen 127.0.0.1:0 --metrics-listen off 2>"$A/serve.log" &
  pid=$!
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/.*serving greeter.proto on 127.0.0.1:0 (port \([0-9]*\)).*/\1/p' \
      "$A/serve.log")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    cat "$A/serve.log"; kill "$pid" 2>/dev/null; echo "greeter did not start"
    exit 1
  fi
  set +e
  /usr/bin/python3 "$SRC/consumer/raw_calls.py" "127.0.0.1:$port" app.v1.Greeter
  rc=$?
  set -e
  kill -TERM "$pid"
  wait "$pid"
  test "$rc" = 0
  # The proto grows a method and a service; regenerating keeps the old
  # scaffolding and names what it lacks, and the rebuilt server (old main)
  # says at start which service it does not register.
  mkdir -p "$A/grown"
  sed -e 's/^  rpc SayHello(HelloRequest) returns (HelloReply);/&\
  rpc SayBye(HelloRequest) returns (HelloReply);/' \
    -e '$a\
service Farewell {\
  rpc Wave(HelloRequest) returns (HelloReply);\
}' "$SRC/consumer/app/greeter.proto" >"$A/grown/greeter.proto"
  (cd "$A/grown" && "$PROTOC" -I. -I"$protodir" \
    --plugin=protoc-gen-perfc="$P/bin/protoc-gen-perfc" \
    --plugin=protoc-gen-c="$PROTOC_GEN_C" \
    --c_out="$A/gen" --perfc_out="stubs=$A:$A/gen" greeter.proto) 2>"$A/notes"
  grep -qx "protoc-gen-perfc: $A/greeter_handlers.c: /app.v1.Greeter/SayBye has no handler (no .say_bye in app__v1__greeter__perfc_handlers): answers UNIMPLEMENTED" "$A/notes"
  grep -qx "protoc-gen-perfc: $A/greeter_main.c: service app.v1.Farewell is not registered (no app__v1__farewell__perfc_register call): it is not served; add app__v1__farewell__perfc_register(srv, &app__v1__farewell__perfc_handlers, NULL)" "$A/notes"
  # shellcheck disable=SC2046
  "${CC:-cc}" -std=c11 -Wall -Wextra -Werror -I"$A/gen" "$A/greeter_main.c" \
    "$A/greeter_handlers.c" "$A/gen/greeter.perfc.c" "$A/gen/greeter.pb-c.c" \
    $(pkg-config --cflags --libs perfc-config) -Wl,--as-needed \
    -Wl,-rpath,"$(pkg-config --variable=libdir perfc)" -o "$A/greeter2"
  "$A/greeter2" --listen 127.0.0.1:0 --metrics-listen off 2>"$A/serve2.log" &
  pid=$!
  for _ in $(seq 100); do
    grep -q 'serving greeter.proto' "$A/serve2.log" && break
    sleep 0.1
  done
  kill -TERM "$pid"
  wait "$pid" || true
  grep -q 'level=warn msg="server: /app.v1.Greeter/SayBye has no handler' "$A/serve2.log"
  grep -q 'level=warn msg="server: service app.v1.Farewell of greeter.proto is not registered, so it is not served; register it in main() with app__v1__farewell__perfc_register()"' "$A/serve2.log" ||
    { cat "$A/serve2.log"; echo "no warning for the unregistered service"; exit 1; }
  # A cached service, as the docs describe it: (perfc.cache) in the proto,
  # scaffolding from stubs=, the handler filled in and nothing else. Its
  # main builds Redis and the cache from the configuration; built with
  # pkg-config perfc-config perfc-data, it refuses to start without
  # redis.address and, with a real redis-server, answers repeats from the
  # cache: the handler runs once per name (its log line) and /metrics
  # counts the loads and hits.
  C=$W/cached
  mkdir -p "$C/gen"
  (cd "$SRC/consumer/app" && "$PROTOC" -I. -I"$protodir" \
    --plugin=protoc-gen-perfc="$P/bin/protoc-gen-perfc" \
    --plugin=protoc-gen-c="$PROTOC_GEN_C" \
    --c_out="$C/gen" --perfc_out="stubs=$C:$C/gen" cached.proto)
  /usr/bin/python3 - "$C/cached_handlers.c" <<'FILL'
import re, sys
p = sys.argv[1]
s = open(p).read()
body = """  (void)user_data;
  size_t n = strlen(req->name) + sizeof "hello ";
  char *m = perfc_ctx_alloc(ctx, n);
  if (m == NULL)
    return PERFC_STATUS_RESOURCE_EXHAUSTED;
  snprintf(m, n, "hello %s", req->name);
  resp->message = m;
  perfc_log(PERFC_LOG_INFO, "greet handler ran for %s", req->name);
  return PERFC_STATUS_OK;
}"""
s, k = re.subn(r"  \(void\)req;.*?scaffold handler\"\);\n}", body, s, flags=re.S)
assert k == 1, "scaffold handler not found"
s = s.replace('#include "cached.perfc.h"\n',
              '#include "cached.perfc.h"\n\n#include <perfc/log.h>\n#include <stdio.h>\n#include <string.h>\n')
open(p, "w").write(s)
FILL
  # shellcheck disable=SC2046
  "${CC:-cc}" -std=c11 -Wall -Wextra -Werror -I"$C/gen" "$C/cached_main.c" \
    "$C/cached_handlers.c" "$C/gen/cached.perfc.c" "$C/gen/cached.pb-c.c" \
    $(pkg-config --cflags --libs perfc-config perfc-data) \
    -Wl,-rpath,"$(pkg-config --variable=libdir perfc)" -o "$C/cached"
  set +e
  "$C/cached" --listen 127.0.0.1:0 --metrics-listen off 2>"$C/no-redis.log"
  rc=$?
  set -e
  test "$rc" = 2
  grep -qx 'cached.proto has cached methods: set redis.address (PERFC_REDIS_ADDRESS or --redis HOST:PORT), or cache.enabled: false to serve without a cache' "$C/no-redis.log" ||
    { cat "$C/no-redis.log"; echo "cached: started without Redis"; exit 1; }
  free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  rport=$(free_port)
  mport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$C" >"$C/redis.log" 2>&1 &
  rpid=$!
  for _ in $(seq 50); do
    redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  "$C/cached" --listen 127.0.0.1:0 --metrics-listen "127.0.0.1:$mport" \
    --redis "127.0.0.1:$rport" 2>"$C/serve.log" &
  pid=$!
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/.*serving cached.proto on 127.0.0.1:0 (port \([0-9]*\)).*/\1/p' \
      "$C/serve.log")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  set +e
  [ -n "$port" ] && timeout -k 5 60 /usr/bin/python3 "$SRC/consumer/cached_calls.py" \
    "127.0.0.1:$port" "127.0.0.1:$mport"
  rc=$?
  set -e
  # Bounded: a service that does not stop on SIGTERM fails the test (with
  # its threads' stacks when gdb is there) instead of hanging ctest, whose
  # pipes the orphans would keep open.
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "cached: still running 10 s after SIGTERM"
    command -v gdb >/dev/null &&
      timeout 60 gdb -p "$pid" -batch -ex 'thread apply all bt 6' 2>/dev/null | grep -E '^(#|Thread)'
    kill -KILL "$pid"; kill "$rpid"; wait "$rpid" || true
    cat "$C/serve.log"; exit 1
  fi
  wait "$pid" || true
  kill "$rpid"
  wait "$rpid" || true
  ran=$(grep -c 'greet handler ran for' "$C/serve.log" || true)
  if [ "$rc" != 0 ] || [ "$ran" != 2 ]; then
    cat "$C/serve.log"; echo "cached: rc $rc, handler ran $ran times (want 2)"
    exit 1
  fi
  echo "install: prefix layout, pkg-config, RUNPATH; greeter started and answered; growth named; cached service cached"
  ;;
example)
  : "${CC:?}" "${WKT_INC:?}"
  EX=$ROOT/examples/user-service/proto
  mkdir -p "$W/perfc" "$W/c" "$W/stubs"
  (cd "$EX" && perfc_protoc \
    --perfc_out="stubs=$W/stubs,openapi=$W/perfc/openapi:$W/perfc" \
    --c_out="$W/c" user/v1/user.proto)
  if [ "${UPDATE:-0}" = 1 ]; then
    rm -rf "$SRC/golden/example"
    cp -r "$W/perfc" "$SRC/golden/example"
    echo "golden/example updated"
    exit 0
  fi
  diff -r -u "$SRC/golden/example" "$W/perfc"
  objs=()
  while IFS= read -r f; do
    "$CC" -std=c11 -Wall -Wextra -Werror -c -I"$W/perfc" -I"$W/c" \
      -I"$ROOT/runtime/include" -I"$WKT_INC" "$f" -o "$W/$(basename "$f" .c).o"
    objs+=("$W/$(basename "$f" .c).o")
  done < <(find "$W/perfc" "$W/c" "$W/stubs" -name '*.c' | sort)
  if [ -z "${SANITIZE:-}" ] && [ -n "${BUILD:-}" ] && [ -e "$BUILD/lib/libperfc.so" ]; then
    # shellcheck disable=SC2046
    "$CC" "${objs[@]}" -L"$BUILD/lib" -lperfc-config -lperfc-data -lperfc -lperfc-wkt \
      $(pkg-config --libs libprotobuf-c) -Wl,-rpath,"$BUILD/lib" \
      -o "$W/user-server"
    "$W/user-server" --help | grep -q -- '--config FILE'
    set +e
    "$W/user-server" --bogus 2>"$W/bad-flag.txt"
    rc=$?
    set -e
    test "$rc" = 2
    grep -qx "config: unknown flag '--bogus'" "$W/bad-flag.txt"
    # It serves with the sample configuration (port 0, no /metrics so no
    # fixed port is needed) and stops gracefully on SIGTERM with status 0.
    "$W/user-server" --config "$ROOT/examples/user-service/config/user-service.yaml" \
      --listen 127.0.0.1:0 --metrics-listen off 2>"$W/serve.log" &
    pid=$!
    for _ in $(seq 50); do
      grep -q 'serving user/v1/user.proto on 127.0.0.1:0 (port [1-9]' \
        "$W/serve.log" && break
      sleep 0.1
    done
    grep -q 'serving user/v1/user.proto' "$W/serve.log" || {
      cat "$W/serve.log"; kill "$pid"; exit 1; }
    # A second one on the same (now busy) port says so once, with the
    # address, and nothing else (no core dump at WARN, no vague repeats);
    # the same for a busy /metrics port.
    busy=$(sed -n 's/.*on 127.0.0.1:0 (port \([0-9]*\)).*/\1/p' "$W/serve.log")
    # Without Redis (cache.enabled false: no subscriber retrying in the log).
    set +e
    PERFC_CACHE_ENABLED=false "$W/user-server" --listen "127.0.0.1:$busy" \
      --metrics-listen off 2>"$W/busy.log"
    rc_grpc=$?
    PERFC_CACHE_ENABLED=false "$W/user-server" --listen 127.0.0.1:0 \
      --metrics-listen "127.0.0.1:$busy" 2>"$W/busy-metrics.log"
    rc_metrics=$?
    # A cached service with no redis.address refuses to start and says what
    # is missing, instead of serving without its cache.
    "$W/user-server" --listen 127.0.0.1:0 --metrics-listen off \
      2>"$W/no-redis.log"
    rc_no_redis=$?
    set -e
    test "$rc_no_redis" = 2
    grep -qx 'user/v1/user.proto has cached methods: set redis.address (PERFC_REDIS_ADDRESS or --redis HOST:PORT), or cache.enabled: false to serve without a cache' "$W/no-redis.log" ||
      { cat "$W/no-redis.log"; echo "no-redis: not refused as expected"; exit 1; }
    kill -TERM "$pid"
    test "$rc_grpc" = 1 && test "$rc_metrics" = 1
    for f in busy busy-metrics; do
      if [ "$(grep -c . "$W/$f.log")" != 1 ]; then
        cat "$W/$f.log"; echo "$f: expected exactly one line"; exit 1
      fi
    done
    grep -q "level=error msg=\"server: cannot listen on 127.0.0.1:$busy: address already in use\"" "$W/busy.log"
    grep -q "level=error msg=\"metrics: cannot listen on 127.0.0.1:$busy: address already in use\"" "$W/busy-metrics.log"
    wait "$pid"
    grep -q 'shutting down gracefully' "$W/serve.log"
    echo "example: generated, compiled, linked; flags checked; served and stopped"
  else
    echo "example: generated and compiled (no unsanitized runtime: not linked)"
  fi
  ;;
*)
  echo "run.sh: unknown mode '$mode'" >&2
  exit 2
  ;;
esac
