/*
 * pb_wire.c — the one check cache_rpc.c makes of stored bytes before
 * sending them as a response: that they are a sequence of well-formed
 * protobuf fields (what the method's load packed), not damaged or foreign
 * bytes from Redis.
 *
 * Room: runtime/src (data layer). Plain C on the wire format; nothing here
 * allocates or touches the core, so tests compile it alone.
 */
#include "core/pb_wire_internal.h"

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

/* Moves *p past one well-formed top-level field (tag and value). */
static int skip_field(const uint8_t **p, const uint8_t *end) {
  uint64_t tag, n;
  if (read_varint(p, end, &tag) != 0 || (tag >> 3) == 0 ||
      (tag >> 3) > 0x1fffffff)
    return -1;
  switch (tag & 7) {
  case PROTOBUF_C_WIRE_TYPE_VARINT:
    return read_varint(p, end, &n);
  case PROTOBUF_C_WIRE_TYPE_64BIT:
    n = 8;
    break;
  case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED:
    if (read_varint(p, end, &n) != 0)
      return -1;
    break;
  case PROTOBUF_C_WIRE_TYPE_32BIT:
    n = 4;
    break;
  default: /* groups (deprecated) and invalid types: let protobuf-c decode */
    return -1;
  }
  if (n > (uint64_t)(end - *p))
    return -1;
  *p += n;
  return 0;
}

int perfc__pb_plain_fields(const uint8_t *data, size_t len) {
  const uint8_t *p = data, *end = data + len;
  int n = 0;
  while (p < end) {
    if (skip_field(&p, end) != 0 || n == INT_MAX)
      return -1;
    n++;
  }
  return n;
}
