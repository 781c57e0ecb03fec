// tests/grpcweb/client.js — an independent gRPC-Web client against a perfc
// server (ctest http.grpcweb_client): protobuf-ts's GrpcWebFetchTransport
// (@protobuf-ts/grpcweb-transport, node's fetch: HTTP/1.1), binary and text
// formats, unary and server-streaming calls, values and statuses asserted.
//
// Why protobuf-ts and hand-written descriptors: protoc-gen-grpc-web (the
// code generator npm's `grpc-web` needs) is a native binary that neither
// Debian nor npm ships for this machine, and `grpc-web`'s runtime needs an
// XMLHttpRequest (a browser's). protobuf-ts's transport runs on node's own
// fetch, and its runtime takes message and service descriptors as data:
// the MessageType / ServiceType below are what its generator would write
// for tests/http/proto/web/v1/web.proto, spelled out by hand. Nothing here
// comes from perfc: the framing, base64, trailers and status parsing are
// protobuf-ts's.
//
// Usage: node client.js BASE_URL   (prints one "ok" line per check; exit 1
// on the first failure)
'use strict';
const assert = require('assert');
const { MessageType, ScalarType, LongType, RepeatType } = require('@protobuf-ts/runtime');
const { ServiceType, RpcError } = require('@protobuf-ts/runtime-rpc');
const { GrpcWebFetchTransport } = require('@protobuf-ts/grpcweb-transport');

const base = process.argv[2];
if (!base) {
  console.error('usage: node client.js BASE_URL');
  process.exit(2);
}
const L = LongType.NUMBER;

const Thing = new MessageType('web.v1.Thing', [
  { no: 1, name: 'id', kind: 'scalar', T: ScalarType.INT64, L },
  { no: 2, name: 'name', kind: 'scalar', T: ScalarType.STRING },
  { no: 3, name: 'tags', kind: 'scalar', repeat: RepeatType.UNPACKED, T: ScalarType.STRING },
  { no: 4, name: 'size', kind: 'scalar', T: ScalarType.INT32 },
]);
const GetThingRequest = new MessageType('web.v1.GetThingRequest', [
  { no: 1, name: 'id', kind: 'scalar', T: ScalarType.INT64, L },
  { no: 2, name: 'view', kind: 'scalar', T: ScalarType.STRING },
]);
const Filter = new MessageType('web.v1.Filter', [
  { no: 1, name: 'name', kind: 'scalar', T: ScalarType.STRING },
  { no: 2, name: 'min_size', kind: 'scalar', T: ScalarType.INT32 },
]);
const ListThingsRequest = new MessageType('web.v1.ListThingsRequest', [
  { no: 1, name: 'page_size', kind: 'scalar', T: ScalarType.INT32 },
  { no: 2, name: 'tags', kind: 'scalar', repeat: RepeatType.UNPACKED, T: ScalarType.STRING },
  { no: 3, name: 'filter', kind: 'message', T: () => Filter },
  { no: 4, name: 'fail_code', kind: 'scalar', T: ScalarType.INT32 },
]);
const FailRequest = new MessageType('web.v1.FailRequest', [
  { no: 1, name: 'code', kind: 'scalar', T: ScalarType.INT32 },
  { no: 2, name: 'message', kind: 'scalar', T: ScalarType.STRING },
  { no: 3, name: 'sleep_ms', kind: 'scalar', T: ScalarType.INT32 },
]);
const Empty = new MessageType('google.protobuf.Empty', []);
const WhoAmIResponse = new MessageType('web.v1.WhoAmIResponse', [
  { no: 1, name: 'authorization', kind: 'scalar', T: ScalarType.STRING },
  { no: 2, name: 'metadata', kind: 'map', K: ScalarType.STRING,
    V: { kind: 'scalar', T: ScalarType.STRING } },
  { no: 3, name: 'remaining_ms', kind: 'scalar', T: ScalarType.INT64, L },
  { no: 4, name: 'method', kind: 'scalar', T: ScalarType.STRING },
]);

const Web = new ServiceType('web.v1.Web', [
  { name: 'GetThing', options: {}, I: GetThingRequest, O: Thing },
  { name: 'CreateThing', options: {}, I: Thing, O: Thing },
  { name: 'DeleteThing', options: {}, I: GetThingRequest, O: Empty },
  { name: 'Fail', options: {}, I: FailRequest, O: Thing },
  { name: 'WhoAmI', options: {}, I: Empty, O: WhoAmIResponse },
  { name: 'StreamThings', serverStreaming: true, options: {}, I: ListThingsRequest, O: Thing },
]);
// A method the server does not have (UNIMPLEMENTED).
const Nope = new ServiceType('web.v1.Web', [{ name: 'Nope', options: {}, I: Empty, O: Empty }]);

// protobuf-ts's messages have a null prototype: compared as plain data.
const plain = (o) => JSON.parse(JSON.stringify(o));
const m = (name) => Web.methods.find((x) => x.name === name);
let checks = 0;
function ok(what) {
  checks++;
  console.log(`ok   ${what}`);
}

async function unary(t, method, input, opts) {
  const call = t.unary(method, method.I.create(input), t.mergeOptions(opts));
  const [response, status, trailers] = await Promise.all([call.response, call.status, call.trailers]);
  return { response, status, trailers, headers: await call.headers };
}

async function expectError(p, code, message) {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RpcError, `not an RpcError: ${e}`);
    assert.strictEqual(e.code, code, `code ${e.code} (${e.message}), want ${code}`);
    if (message !== undefined)
      assert.strictEqual(e.message, message);
    return e;
  }
  assert.fail(`no error, want ${code}`);
}

async function run(format, id) {
  const t = new GrpcWebFetchTransport({ baseUrl: base, format });
  // Unary: create, then read back.
  let r = await unary(t, m('CreateThing'), { id, name: `made-${format}`, tags: ['a', 'b'], size: 7 });
  assert.strictEqual(r.status.code, 'OK');
  assert.deepStrictEqual(plain(r.response), { id, name: `made-${format}`, tags: ['a', 'b'], size: 7 });
  // (the server keeps no tags: GetThing answers none)
  r = await unary(t, m('GetThing'), { id });
  assert.deepStrictEqual(plain(r.response), { id, name: `made-${format}`, tags: [], size: 7 });
  ok(`${format}: CreateThing then GetThing round-trip`);
  // An error status, with its message from the trailers.
  await expectError(t.unary(m('GetThing'), GetThingRequest.create({ id: 51 }), t.mergeOptions()).response,
                    'NOT_FOUND', 'thing 51 not found');
  ok(`${format}: GetThing of a missing thing is NOT_FOUND "thing 51 not found"`);
  // Every code the handler is told to answer comes back as that code.
  for (const [code, name] of [[3, 'INVALID_ARGUMENT'], [7, 'PERMISSION_DENIED'], [14, 'UNAVAILABLE']]) {
    const msg = `told ${code} over ${format}`;
    await expectError(t.unary(m('Fail'), FailRequest.create({ code, message: msg }), t.mergeOptions()).response,
                      name, msg);
  }
  ok(`${format}: Fail answers INVALID_ARGUMENT, PERMISSION_DENIED, UNAVAILABLE with their messages`);
  // Interceptors run: the auth interceptor refuses DeleteThing without a token.
  await expectError(t.unary(m('DeleteThing'), GetThingRequest.create({ id }), t.mergeOptions()).response,
                    'UNAUTHENTICATED');
  ok(`${format}: DeleteThing without a token is UNAUTHENTICATED`);
  // Metadata in (meta -> headers), the deadline (timeout -> grpc-timeout).
  r = await unary(t, m('WhoAmI'), {}, { meta: { tenant: 'acme', authorization: 'Bearer node' }, timeout: 5000 });
  assert.strictEqual(r.response.authorization, 'Bearer node');
  assert.strictEqual(r.response.metadata.tenant, 'acme');
  assert.strictEqual(r.response.method, '/web.v1.Web/WhoAmI');
  assert.ok(r.response.remainingMs > 3000 && r.response.remainingMs <= 5000, `remaining ${r.response.remainingMs}`);
  assert.strictEqual(r.headers['x-served-by'], 'perfc');
  ok(`${format}: WhoAmI sees the metadata and a deadline of ${r.response.remainingMs} ms of 5000`);
  // A deadline that passes: Fail sleeps 2 s on a worker, the client gave 200 ms.
  const t0 = Date.now();
  await expectError(t.unary(m('Fail'), FailRequest.create({ code: 0, sleepMs: 2000 }),
                            t.mergeOptions({ timeout: 200 })).response, 'DEADLINE_EXCEEDED');
  assert.ok(Date.now() - t0 < 1900, `deadline answered after ${Date.now() - t0} ms`);
  ok(`${format}: a 200 ms deadline on a 2 s handler is DEADLINE_EXCEEDED`);
  await expectError(t.unary(Nope.methods[0], Empty.create(), t.mergeOptions()).response, 'UNIMPLEMENTED');
  ok(`${format}: an unknown method is UNIMPLEMENTED`);
  // Server streaming: every message, then OK.
  let call = t.serverStreaming(m('StreamThings'), ListThingsRequest.create({ pageSize: 4 }), t.mergeOptions());
  const got = [];
  for await (const th of call.responses)
    got.push(th);
  assert.strictEqual((await call.status).code, 'OK');
  assert.deepStrictEqual(plain(got), [1, 2, 3, 4].map((i) => ({ id: i, name: `thing-${i}`, tags: [], size: i * 10 })));
  ok(`${format}: StreamThings yields 4 things, then OK`);
  // A failing stream: its messages, then the error from the trailers frame.
  call = t.serverStreaming(m('StreamThings'), ListThingsRequest.create({ pageSize: 2, failCode: 9 }), t.mergeOptions());
  const part = [];
  const e = await expectError((async () => {
    for await (const th of call.responses)
      part.push(th.id);
  })(), 'FAILED_PRECONDITION', 'failed after 2 things');
  assert.deepStrictEqual(part, [1, 2]);
  ok(`${format}: a stream failing after 2 things delivers both, then FAILED_PRECONDITION (${e.message})`);
  // A large server stream: 500 messages arrive in order.
  call = t.serverStreaming(m('StreamThings'), ListThingsRequest.create({ pageSize: 500 }), t.mergeOptions());
  let n = 0;
  for await (const th of call.responses)
    assert.strictEqual(th.id, ++n);
  assert.strictEqual(n, 500);
  assert.strictEqual((await call.status).code, 'OK');
  ok(`${format}: StreamThings of 500 in order`);
  // The client refuses client and bidi streaming itself (gRPC-Web in a
  // browser cannot send a streaming body): said here, so the limit is known.
  assert.throws(() => t.clientStreaming(m('GetThing'), t.mergeOptions()), /not supported/);
}

(async () => {
  await run('binary', 42);
  await run('text', 43);
  // Creating 42 again: ALREADY_EXISTS, the message from the trailers.
  const t = new GrpcWebFetchTransport({ baseUrl: base, format: 'text' });
  await expectError(t.unary(m('CreateThing'), Thing.create({ id: 42, name: 'again' }), t.mergeOptions()).response,
                    'ALREADY_EXISTS', 'thing 42 exists');
  ok('text: CreateThing of an existing thing is ALREADY_EXISTS "thing 42 exists"');
  console.log(`grpcweb client: ${checks} checks passed`);
})().catch((e) => {
  console.error(`FAIL ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
