/*
 * pb_wire.c — the one check cache_rpc.c makes of stored bytes before
 * sending them as a response: that they are a sequence of well-formed
 * protobuf fields (what the method's load packed), not damaged or foreign
 * bytes from Redis.
 *
 * Room: runtime/src (data layer). Plain C on the wire format; nothing here
 * allocates or touches the core, so tests compile it alone.
 */
#include "pb_wire_internal.h"

#include <limits.h>
#include <protobuf-c/protobuf-c.h>

/* Reads the varint at *p (before end) and moves *p past it. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t r = 0;
  for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    r |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return 0;
    }
  }
  return -1;
}

/* Walks one top-level field at *p: its number and wire type, and where its
 * bytes (after the tag) begin and end. */
static int next_field(const uint8_t **p, const uint8_t *end, uint32_t *number,
                      int *wire, const uint8_t **body) {
  uint64_t tag, n;
  if (read_varint(p, end, &tag) != 0 || (tag >> 3) == 0 ||
      (tag >> 3) > 0x1fffffff)
    return -1;
  *number = (uint32_t)(tag >> 3);
  *wire = (int)(tag & 7);
  *body = *p;
  switch (*wire) {
  case PROTOBUF_C_WIRE_TYPE_VARINT:
    return read_varint(p, end, &n);
  case PROTOBUF_C_WIRE_TYPE_64BIT:
    if (end - *p < 8)
      return -1;
    *p += 8;
    return 0;
  case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED:
    if (read_varint(p, end, &n) != 0 || n > (uint64_t)(end - *p))
      return -1;
    *p += n;
    return 0;
  case PROTOBUF_C_WIRE_TYPE_32BIT:
    if (end - *p < 4)
      return -1;
    *p += 4;
    return 0;
  default: /* groups (deprecated) and invalid types: let protobuf-c decode */
    return -1;
  }
}

int perfc__pb_plain_fields(const uint8_t *data, size_t len) {
  const uint8_t *p = data, *end = data + len, *body;
  uint32_t number;
  int wire;
  int n = 0;
  while (p < end) {
    if (next_field(&p, end, &number, &wire, &body) != 0 || n == INT_MAX)
      return -1;
    n++;
  }
  return n;
}
