/* fuzz_decode.c — the server's request decode step for generated services:
 * bytes become a grpc_byte_buffer (plain, or gzip/deflate-compressed as a
 * client sending grpc-encoding would produce, split into slices), then
 * perfc__byte_buffer_flatten() and protobuf_c_message_unpack() with the
 * call arena's allocator, the two calls server.c makes (decode_request)
 * before a handler runs. The message type is the `input` of a method of
 * the generated bench.v1.Echo or perfc.test.v1.TestService descriptors.
 *
 * Why this and not a real in-process server fed raw HTTP/2 frames: the
 * frames are parsed by the gRPC core, not by perfc, and a full call costs
 * threads, sockets and ~100 us per input, leaving libFuzzer nondeterministic
 * and slow. What perfc owns on that path is exactly what runs here: the
 * single-slice fast path and the copying path of the flattener, inflation
 * through the byte-buffer reader, and unpacking into the arena.
 *
 * Input: byte 0 picks the method, byte 1 the framing (low 2 bits: none,
 * gzip, deflate; the rest: where to split into two slices), the rest is
 * the payload.
 *
 * Room: tests/fuzz. */
#include "echo.perfc.h"
#include "perfc/test/v1/test.perfc.h"
#include "server/server_internal.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <stdlib.h>

static const perfc_method_desc *pick(uint8_t b) {
  const perfc_service_desc *svcs[] = {
      &bench__v1__echo__perfc_desc, &perfc__test__v1__test_service__perfc_desc};
  size_t total = 0;
  for (size_t i = 0; i < 2; i++)
    total += svcs[i]->n_methods;
  size_t k = b % total;
  for (size_t i = 0; i < 2; i++) {
    if (k < svcs[i]->n_methods)
      return &svcs[i]->methods[k];
    k -= svcs[i]->n_methods;
  }
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int inited;
  if (!inited) {
    grpc_init(); /* slices and byte buffers need the core's allocators */
    inited = 1;
  }
  if (size < 2 || size > 1 << 20)
    return 0;
  const perfc_method_desc *m = pick(data[0]);
  unsigned mode = data[1] & 3;
  const uint8_t *p = data + 2;
  size_t n = size - 2;
  size_t cut = n ? (size_t)(data[1] >> 2) * n / 63 : 0;
  if (cut > n)
    cut = n;

  grpc_slice s[2];
  size_t ns = 0;
  if (cut > 0 && cut < n) {
    s[ns++] = grpc_slice_from_copied_buffer((const char *)p, cut);
    s[ns++] = grpc_slice_from_copied_buffer((const char *)p + cut, n - cut);
  } else {
    s[ns++] = grpc_slice_from_copied_buffer((const char *)p, n);
  }
  grpc_byte_buffer *bb =
      mode == 1
          ? grpc_raw_compressed_byte_buffer_create(s, ns, GRPC_COMPRESS_GZIP)
      : mode == 2
          ? grpc_raw_compressed_byte_buffer_create(s, ns, GRPC_COMPRESS_DEFLATE)
          : grpc_raw_byte_buffer_create(s, ns);
  for (size_t i = 0; i < ns; i++)
    grpc_slice_unref(s[i]);

  perfc_arena *a;
  if (perfc_arena_new(&a, 0) == 0) {
    const uint8_t *flat;
    size_t len;
    /* The server's default receive limit bounds what inflation may allocate. */
    if (perfc__byte_buffer_flatten(bb, 4u << 20, a, &flat, &len) == 0) {
      if (mode == 0 && len != n)
        abort(); /* an uncompressed buffer flattens to exactly its bytes */
      ProtobufCAllocator al = perfc_arena_allocator(a);
      ProtobufCMessage *req =
          protobuf_c_message_unpack(m->input, &al, len, flat);
      if (req != NULL) {
        /* What the handler then does most: read it, pack a response. */
        size_t packed = protobuf_c_message_get_packed_size(req);
        uint8_t *out = perfc_arena_alloc(a, packed ? packed : 1);
        if (out != NULL && protobuf_c_message_pack(req, out) != packed)
          abort();
      }
    }
    perfc_arena_free(a);
  }
  grpc_byte_buffer_destroy(bb);
  return 0;
}
