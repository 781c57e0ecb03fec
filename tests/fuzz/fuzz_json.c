/* fuzz_json.c — the gateway's JSON decoder (runtime/src/gateway/
 * json_parse.c, json_decode.c) on arbitrary bytes, as a request body for
 * gw.v1.All (every field kind and well-known type of the proto3 JSON
 * mapping, tests/unit/gateway/gw.proto). Whatever decodes is encoded again
 * and decoded once more, and must give the same JSON text: the encoder
 * never writes what the decoder refuses, and the mapping round-trips.
 *
 * Input: byte 0 picks the options (bit 0 reject unknown fields, bit 1
 * proto names out, bit 2 defaults out, bits 3-4 a depth bound of 100, 8,
 * 2 or 1000), the rest is the body.
 *
 * Room: tests/fuzz. */
#include "perfc/gateway.h"

#include "gw.pb-c.h"

#include <stdlib.h>
#include <string.h>

static const ProtobufCMessageDescriptor *resolve(const char *name, void *ud) {
  (void)ud;
  if (strcmp(name, "gw.v1.All") == 0)
    return &gw__v1__all__descriptor;
  if (strcmp(name, "gw.v1.Inner") == 0)
    return &gw__v1__inner__descriptor;
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  static const size_t depths[] = {100, 8, 2, 1000};
  perfc_json_opts o = {.reject_unknown_fields = data[0] & 1,
                       .use_proto_names = (data[0] >> 1) & 1,
                       .emit_unpopulated = (data[0] >> 2) & 1,
                       .max_depth = depths[(data[0] >> 3) & 3],
                       .resolve_type = resolve};
  perfc_arena *a;
  if (perfc_arena_new(&a, 0) != 0)
    abort();
  ProtobufCMessage *m;
  if (perfc_json_decode(&gw__v1__all__descriptor, (const char *)data + 1,
                        size - 1, &o, a, &m) == 0) {
    char *j1, *j2;
    size_t l1, l2;
    int rc = perfc_json_encode(m, &o, a, &j1, &l1);
    /* Only a Timestamp, Duration or Value the mapping cannot print (out
     * of range, NaN in a Value) is refused; a decoded one never is. */
    if (rc != 0)
      abort();
    ProtobufCMessage *m2;
    if (perfc_json_decode(&gw__v1__all__descriptor, j1, l1, &o, a, &m2) != 0)
      abort();
    if (perfc_json_encode(m2, &o, a, &j2, &l2) != 0 || l1 != l2 ||
        memcmp(j1, j2, l1) != 0)
      abort();
    /* The message is a valid protobuf-c message: it packs. */
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = perfc_arena_alloc(a, n + 1);
    if (!buf || protobuf_c_message_pack(m, buf) != n)
      abort();
  }
  perfc_arena_free(a);
  return 0;
}
