#!/usr/bin/env bash
# tests/openapi/run.sh — ctest openapi.validate: every OpenAPI document
# protoc-gen-perfc writes (openapi=DIR) is valid for
# @apidevtools/swagger-parser, and the validator rejects broken copies
# (so this test can fail).
#
# Room: tests/openapi. Needs node and node_modules here (scripts/bootstrap
# runs `npm ci` in this folder). Writes only under $WORK.
# Environment: PROTOC, PLUGIN, ROOT (project source), WORK, NODE, and
# optionally EXTRA (more documents to validate, space-separated: the user
# service's build-time one).
set -euo pipefail
: "${PROTOC:?}" "${PLUGIN:?}" "${ROOT:?}" "${WORK:?}" "${NODE:?}"
HERE=$ROOT/tests/openapi
if [ ! -d "$HERE/node_modules/@apidevtools/swagger-parser" ]; then
  echo "openapi.validate: $HERE/node_modules is missing; run scripts/bootstrap" \
       "(it runs: npm ci --prefix tests/openapi)" >&2
  exit 1
fi
rm -rf "$WORK"
mkdir -p "$WORK/docs" "$WORK/broken"
gen() { # DIR PROTO...
  local dir=$1
  shift
  (cd "$dir" && "$PROTOC" -I. -I"$ROOT/proto" --plugin=protoc-gen-perfc="$PLUGIN" \
    --perfc_out="openapi=$WORK/docs:$WORK" "$@")
}
gen "$ROOT/tests/generator/protos" http.proto openapi.proto
gen "$ROOT/examples/user-service/proto" user/v1/user.proto
mapfile -t docs < <(find "$WORK/docs" -name '*.openapi.json' | sort)
for e in ${EXTRA:-}; do
  [ -f "$e" ] || { echo "openapi.validate: $e was not generated" >&2; exit 1; }
  docs+=("$e")
done
if [ "${#docs[@]}" -lt 3 ]; then
  echo "openapi.validate: expected at least 3 documents, got ${#docs[@]}" >&2
  exit 1
fi
"$NODE" "$HERE/validate.js" "${docs[@]}"

# Broken copies of a good document, one fault each; every one must be
# rejected, with its own reason.
src=$WORK/docs/http.openapi.json
"$NODE" - "$src" "$WORK/broken" <<'JS'
const fs = require('fs');
const [src, out] = process.argv.slice(2);
const load = () => JSON.parse(fs.readFileSync(src, 'utf8'));
const save = (name, d) => fs.writeFileSync(`${out}/${name}.json`, JSON.stringify(d, null, 2));
let d = load();
// A path parameter of the template that no operation declares.
delete d.paths['/v1/shelves/{shelf}/books/{bookId}'].get.parameters;
save('undeclared_path_param', d);
d = load();
// A $ref to a schema that does not exist.
d.paths['/v1/books:batchGet'].post.requestBody.content['application/json'].schema.$ref =
  '#/components/schemas/httpdemo.v1.Nowhere';
save('dangling_ref', d);
d = load();
// Not a JSON Schema type.
d.components.schemas['httpdemo.v1.Book'].properties.id.type = 'int64';
save('bad_type', d);
d = load();
// Two operations with one operationId.
d.paths['/v1/books/{bookId}'].get.operationId = 'Library_GetBook';
save('duplicate_operation_id', d);
d = load();
// A path parameter that is not in the path.
d.paths['/v1/books:batchGet'].post.parameters = [
  { name: 'id', in: 'path', required: true, schema: { type: 'string' } }];
save('stray_path_param', d);
d = load();
// Two paths that OpenAPI takes for one.
d.paths['/v1/books/{id}'] = d.paths['/v1/books/{bookId}'];
save('identical_paths', d);
JS
declare -A why=(
  [bad_type]="schema validation failed" [dangling_ref]="does not exist"
  [duplicate_operation_id]="operationId Library_GetBook is also"
  [identical_paths]="identical but for their parameters' names"
  [stray_path_param]="path parameter id is not in the path"
  [undeclared_path_param]="path parameter {shelf} is not declared")
n=0
for b in "$WORK"/broken/*.json; do
  set +e
  out=$("$NODE" "$HERE/validate.js" "$b")
  rc=$?
  set -e
  echo "$out"
  c=$(basename "$b" .json)
  if [ "$rc" != 1 ] || ! grep -q '^INVALID ' <<<"$out" ||
     ! grep -qF "${why[$c]}" <<<"$out"; then
    echo "openapi.validate: $c was not rejected for its fault (rc $rc)" >&2
    exit 1
  fi
  n=$((n + 1))
done
test "$n" = 6
echo "openapi.validate: ${#docs[@]} documents valid, $n broken copies rejected"
