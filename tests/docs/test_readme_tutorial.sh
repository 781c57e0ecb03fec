#!/usr/bin/env bash
# test_readme_tutorial.sh BUILD_DIR SOURCE_DIR — the README's five-minute
# tutorial, verbatim: install perfc into a scratch prefix, write the proto
# and the two C code blocks from README.md, generate with protoc, build with
# pkg-config, run the server, call it with the client, stop it with SIGTERM.
# Then the README's private-prefix block, as written (with $HOME/perfc as a
# scratch prefix and this build folder): generated files in gen/, no
# LD_LIBRARY_PATH, the program found through its rpath. Fails when the
# README and the code drift apart.
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d)
trap 'kill "${server_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
export PATH="$work/prefix/bin:$PATH"
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig:$work/prefix/lib/x86_64-linux-gnu/pkgconfig"
export LD_LIBRARY_PATH="$work/prefix/lib:$work/prefix/lib/x86_64-linux-gnu"
cd "$work"
/usr/bin/python3 - "$src/README.md" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
proto = re.findall(r"```proto\n(.*?)```", text, re.S)[0]
c = re.findall(r"```c\n(.*?)```", text, re.S)
open("greeter.proto", "w").write(proto)
open("server.c", "w").write(c[0])
open("client.c", "w").write('#include <stdio.h>\n#include "greeter.perfc.h"\nint main(void) {\n' + c[1] + "  return 0;\n}\n")
sh = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "cmake --install build --prefix" in b]
assert len(sh) == 1, "README: no private-prefix block"
lines = sh[0].rstrip("\n").split("\n")
assert lines[-1] == "./greeter", lines[-1]
open("prefix.sh", "w").write("\n".join(lines[:-1]) + "\n")
PY
# The port the tutorial uses; skip rather than fail if something holds it.
if ss -Htln "( sport = :50051 )" | grep -q .; then
  echo "port 50051 is busy; cannot run the tutorial verbatim"; exit 0
fi
protoc --c_out=. --perfc_out=. greeter.proto
cc -Wall -Wextra -Werror -Wno-unused-parameter -o greeter server.c greeter.perfc.c greeter.pb-c.c $(pkg-config --cflags --libs perfc)
cc -Wall -Wextra -Werror -o client client.c greeter.perfc.c greeter.pb-c.c $(pkg-config --cflags --libs perfc)
./greeter >server.log 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do ss -Htln "( sport = :50051 )" | grep -q . && break; sleep 0.1; done
out=$(./client)
echo "client printed: $out"
[ "$out" = "hello, perfc" ]
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=""
echo "tutorial OK"

# The private-prefix block, from a clean environment: HOME is a scratch
# folder, the install comes from this build, nothing on LD_LIBRARY_PATH.
mkdir -p "$work/home" "$work/private"
cp greeter.proto server.c client.c "$work/private/"
cd "$work/private"
env -u LD_LIBRARY_PATH -u PKG_CONFIG_PATH HOME="$work/home" \
  PATH="$(echo "$PATH" | sed "s|$work/prefix/bin:||")" \
  bash -euo pipefail -c "cmake() { if [ \"\$1 \$2\" = '--install build' ]; then shift 2; command cmake --install '$build' \"\$@\" >/dev/null; else command cmake \"\$@\"; fi; }
$(cat "$work/prefix.sh")
cc -o client -Igen client.c gen/greeter.perfc.c gen/greeter.pb-c.c \
   \$(pkg-config --cflags --libs perfc) -Wl,-rpath,\"\$(pkg-config --variable=libdir perfc)\""
test -x greeter && test -x client
env -u LD_LIBRARY_PATH ./greeter >server.log 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do ss -Htln "( sport = :50051 )" | grep -q . && break; sleep 0.1; done
out=$(env -u LD_LIBRARY_PATH ./client)
echo "client printed: $out"
[ "$out" = "hello, perfc" ]
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=""
echo "private prefix OK"
