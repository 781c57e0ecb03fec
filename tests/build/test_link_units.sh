#!/usr/bin/env bash
# tests/build/test_link_units.sh BUILD — the link units keep their promise
# (docs/design.md, "Rooms and link units"):
#   - a plain service (perfc-echo-server: no cache options, no config) links
#     neither libpq nor hiredis nor libcyaml;
#   - the shared libraries export only the public perfc_ API: no perfc__
#     internal or test hook, nothing without the prefix.
set -euo pipefail
BUILD=${1:?usage: test_link_units.sh BUILD}
fail=0

deps=$(ldd "$BUILD/bin/perfc-echo-server")
for lib in libpq libhiredis libcyaml libyaml libperfc-data libperfc-config; do
  if grep -q "$lib" <<<"$deps"; then
    echo "FAIL: perfc-echo-server links $lib"; fail=1
  fi
done
grep -q 'libperfc\.so' <<<"$deps" || { echo "FAIL: perfc-echo-server does not link libperfc"; fail=1; }

for so in libperfc libperfc-data libperfc-config; do
  f="$BUILD/lib/$so.so"
  [ -e "$f" ] || { echo "FAIL: $f missing"; fail=1; continue; }
  syms=$(nm -D --defined-only "$f" | awk '{print $3}')
  n=$(grep -c . <<<"$syms" || true)
  bad=$(grep -v '^perfc_[a-z0-9]' <<<"$syms" || true)
  if [ -n "$bad" ]; then
    echo "FAIL: $so exports symbols outside the public perfc_ API:"
    sed 's/^/  /' <<<"$bad" | head -20; fail=1
  fi
  echo "$so: $n exported symbols, all perfc_*"
done

# The data unit carries the cache-aside, Redis and PostgreSQL code, and only
# it links their client libraries. (ldd's output is read whole: grep -q in a
# pipe would stop it early, and pipefail would count that as a failure.)
data=$(ldd "$BUILD/lib/libperfc-data.so")
config=$(ldd "$BUILD/lib/libperfc-config.so")
runtime=$(ldd "$BUILD/lib/libperfc.so")
grep -q libhiredis <<<"$data" || { echo "FAIL: libperfc-data lacks hiredis"; fail=1; }
grep -q libpq <<<"$data" || { echo "FAIL: libperfc-data lacks libpq"; fail=1; }
grep -q libcyaml <<<"$config" || { echo "FAIL: libperfc-config lacks libcyaml"; fail=1; }
for lib in libpq libhiredis libcyaml; do
  if grep -q "$lib" <<<"$runtime"; then
    echo "FAIL: libperfc links $lib"; fail=1
  fi
done
exit $fail
