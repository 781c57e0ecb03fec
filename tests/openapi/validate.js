#!/usr/bin/env node
// tests/openapi/validate.js FILE... — validates each OpenAPI document with
// @apidevtools/swagger-parser (the OpenAPI 3.0 JSON Schema, and $refs that
// must resolve), then with the rules of the OpenAPI 3.0.3 text that no
// JSON Schema can say. swagger-parser 10 checks those for Swagger 2.0 only
// (lib/validators/spec.js returns early for `openapi` documents), so they
// are written here, after its Swagger 2.0 checks: unique operationIds;
// each {name} of a path declared once as a required path parameter and
// each path parameter present in the path; parameters unique by name and
// location; no two paths equal but for their parameters' names. Prints one
// line per file; exits 1 when any document is invalid, 2 on usage errors.
//
// Room: tests/openapi. Installed by scripts/bootstrap (npm ci here).
'use strict';
const SwaggerParser = require('@apidevtools/swagger-parser');

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

function semantic(api) {
  const errs = [];
  const ids = new Map();
  const shapes = new Map();
  for (const [path, item] of Object.entries(api.paths || {})) {
    const names = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    const shape = path.replace(/\{[^}]+\}/g, '{}');
    if (shapes.has(shape))
      errs.push(`paths ${shapes.get(shape)} and ${path} are identical but for their parameters' names`);
    shapes.set(shape, path);
    if (new Set(names).size !== names.length)
      errs.push(`${path}: a parameter name appears twice in the path`);
    for (const m of METHODS) {
      const op = item[m];
      if (!op) continue;
      const where = `${m.toUpperCase()} ${path}`;
      if (op.operationId !== undefined) {
        if (ids.has(op.operationId))
          errs.push(`${where}: operationId ${op.operationId} is also ${ids.get(op.operationId)}'s`);
        ids.set(op.operationId, where);
      }
      const params = [...(item.parameters || []), ...(op.parameters || [])];
      const seen = new Set();
      for (const p of op.parameters || []) {
        const key = `${p.in}:${p.name}`;
        if (seen.has(key)) errs.push(`${where}: parameter ${p.name} (in ${p.in}) twice`);
        seen.add(key);
      }
      const inPath = params.filter((p) => p.in === 'path');
      for (const n of names) {
        const p = inPath.find((q) => q.name === n);
        if (!p) errs.push(`${where}: path parameter {${n}} is not declared`);
        else if (p.required !== true) errs.push(`${where}: path parameter ${n} is not required`);
      }
      for (const p of inPath)
        if (!names.includes(p.name)) errs.push(`${where}: path parameter ${p.name} is not in the path`);
    }
  }
  return errs;
}

async function main(files) {
  if (files.length === 0) {
    console.error('usage: validate.js FILE.openapi.json...');
    return 2;
  }
  let bad = 0;
  for (const f of files) {
    try {
      // validate() dereferences in place: parse afresh for each file.
      const api = await SwaggerParser.validate(f);
      const errs = semantic(api);
      if (errs.length) throw new Error(errs.join('\n'));
      console.log(`valid ${f}: OpenAPI ${api.openapi}, ${Object.keys(api.paths).length} paths`);
    } catch (e) {
      console.log(`INVALID ${f}: ${e.message.split('\n').slice(0, 6).join(' | ')}`);
      bad++;
    }
  }
  return bad ? 1 : 0;
}

main(process.argv.slice(2)).then((rc) => process.exit(rc));
