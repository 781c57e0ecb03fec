/*
 * pb_wire.c — walks over protobuf wire bytes, without decoding them:
 * - the check cache_rpc.c makes of stored bytes before sending them as a
 *   response: that they are a sequence of well-formed protobuf fields (what
 *   the method's load packed), not damaged or foreign bytes from Redis;
 * - the check of every string field of a received message before
 *   protobuf-c unpacks it. protobuf-c hands string fields to C as
 *   NUL-terminated copies and drops their length, so "Alice\0Admin" would
 *   reach a handler as "Alice"; and proto3 requires string fields to be
 *   valid UTF-8. After the unpack the bytes after a NUL are out of sight,
 *   so the check reads the wire bytes, guided by the message descriptor.
 *
 * Room: runtime/src/core. Plain C on the wire format; nothing here
 * allocates or touches the core, so tests compile it alone.
 */
#include "core/pb_wire_internal.h"

#include <limits.h>
#include <protobuf-c/protobuf-c.h>
#include <stdio.h>
#include <string.h>

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

/* Moves *p past the value of a field of wire type `wt` (its tag read);
 * for a length-delimited one, *body and *body_len (when not NULL) get the
 * bytes. -1 when the value is truncated or the type is a group or
 * invalid. */
static int skip_value(const uint8_t **p, const uint8_t *end, unsigned wt,
                      const uint8_t **body, size_t *body_len) {
  uint64_t n;
  switch (wt) {
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
  if (body != NULL) {
    *body = *p;
    *body_len = (size_t)n;
  }
  *p += n;
  return 0;
}

/* Moves *p past one well-formed top-level field (tag and value). */
static int skip_field(const uint8_t **p, const uint8_t *end) {
  uint64_t tag;
  if (read_varint(p, end, &tag) != 0 || (tag >> 3) == 0 ||
      (tag >> 3) > 0x1fffffff)
    return -1;
  return skip_value(p, end, (unsigned)(tag & 7), NULL, NULL);
}

int perfc__pb_plain_fields(const uint8_t *data, size_t len) {
  const uint8_t *p = data, *end = data + len;
  int n = 0;
  while (p < end) {
    if (n == INT_MAX)
      return -1;
    n++;
    /* Inline, the fields of a typical cached message (every L1 hit walks
     * its value): a one-byte tag (field numbers 1..15) with a one-byte
     * varint or a one-byte length. Exactly what skip_field() decides for
     * those bytes; anything else goes through it. */
    uint8_t t = p[0];
    if (t >= 0x08 && t < 0x80 && end - p >= 2 && p[1] < 0x80) {
      if ((t & 7) == PROTOBUF_C_WIRE_TYPE_VARINT) {
        p += 2;
        continue;
      }
      if ((t & 7) == PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED) {
        if (p[1] > end - p - 2)
          return -1; /* truncated */
        p += 2 + p[1];
        continue;
      }
    }
    if (skip_field(&p, end) != 0)
      return -1;
  }
  return n;
}

/* ---- string fields -------------------------------------------------------- */

/* Eight bytes with every byte in 1..0x7f: ASCII without NUL. A zero byte
 * becomes 0xff in v - 0x01..01 (the lowest one always does: no borrow
 * reaches it), and a byte >= 0x80 has its high bit set in v. */
static int ascii_no_nul8(const uint8_t *s) {
  uint64_t v;
  memcpy(&v, s, 8);
  return ((v | (v - 0x0101010101010101u)) & 0x8080808080808080u) == 0;
}

perfc__pb_verdict perfc__pb_check_string(const uint8_t *s, size_t len,
                                         int utf8, size_t *at) {
  if (!utf8) {
    const uint8_t *z = memchr(s, 0, len);
    if (z == NULL)
      return PERFC__PB_OK;
    *at = (size_t)(z - s);
    return PERFC__PB_NUL;
  }
  size_t i = 0;
  while (i < len) {
    while (len - i >= 8 && ascii_no_nul8(s + i))
      i += 8;
    /* Fewer than 8 bytes left: when the last 8 of the string (some of them
     * already checked; `i` is on a character boundary) are plain ASCII,
     * the rest is too. */
    if (len - i < 8 && len >= 8 && ascii_no_nul8(s + len - 8))
      return PERFC__PB_OK;
    /* Byte by byte for the next 8 bytes or so, then the fast path again:
     * text that mixes scripts tries it once per 8 bytes, not per
     * character. Well-formed sequences (Unicode 15, table 3-7): the second
     * byte's range is narrowed after E0 (no overlong), ED (no surrogates),
     * F0 (no overlong) and F4 (nothing above U+10FFFF); C0, C1 and F5..FF
     * never start one. */
    size_t stop = len - i > 8 ? i + 8 : len;
    while (i < stop) {
      uint8_t c = s[i];
      if (c < 0x80) {
        if (c == 0) {
          *at = i;
          return PERFC__PB_NUL;
        }
        i++;
      } else if (c < 0xe0) {
        if (c < 0xc2 || len - i < 2 || (s[i + 1] & 0xc0) != 0x80)
          goto bad;
        i += 2;
      } else if (c < 0xf0) {
        uint8_t lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        if (len - i < 3 || s[i + 1] < lo || s[i + 1] > hi ||
            (s[i + 2] & 0xc0) != 0x80)
          goto bad;
        i += 3;
      } else {
        uint8_t lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        if (c > 0xf4 || len - i < 4 || s[i + 1] < lo || s[i + 1] > hi ||
            (s[i + 2] & 0xc0) != 0x80 || (s[i + 3] & 0xc0) != 0x80)
          goto bad;
        i += 4;
      }
    }
  }
  return PERFC__PB_OK;
bad:
  *at = i;
  return PERFC__PB_BAD_UTF8;
}

/* The varint at *p: one byte inline (tags and short lengths), else
 * read_varint. */
static inline int read_varint_fast(const uint8_t **p, const uint8_t *end,
                                   uint64_t *v) {
  if (*p < end && **p < 0x80) {
    *v = *(*p)++;
    return 0;
  }
  return read_varint(p, end, v);
}

/* The field numbered `id` in `d`, or NULL. Most messages number their
 * fields from 1 without gaps: one range, indexed directly; others go
 * through protobuf-c's binary search of its ranges (the array holds
 * n_field_ranges entries and a sentinel whose orig_index is n_fields). */
static const ProtobufCFieldDescriptor *
field_of(const ProtobufCMessageDescriptor *d, uint32_t id) {
  const ProtobufCIntRange *r = d->field_ranges;
  if (d->n_field_ranges > 0 && id >= (uint32_t)r[0].start_value &&
      id - (uint32_t)r[0].start_value <
          (uint32_t)(r[1].orig_index - r[0].orig_index))
    return d->fields + r[0].orig_index + (id - (uint32_t)r[0].start_value);
  return protobuf_c_message_descriptor_get_field(d, id);
}

/* One message at `depth`. The walk reads the wire exactly as protobuf-c
 * 1.4.1's unpack does where that accepts the bytes (field numbers from the
 * tag, the descriptor's field for that number), so every string protobuf-c
 * would hand over is checked; where protobuf-c refuses the bytes the walk
 * just stops. */
static perfc__pb_verdict walk(const ProtobufCMessageDescriptor *d,
                              const uint8_t *p, const uint8_t *end,
                              perfc_string_check check, unsigned depth,
                              perfc__pb_bad_field *bad) {
  const ProtobufCFieldDescriptor *f = NULL;
  while (p < end) {
    uint64_t tag;
    const uint8_t *body;
    size_t body_len;
    if (read_varint_fast(&p, end, &tag) != 0 || (tag >> 3) > UINT32_MAX)
      return PERFC__PB_OK;
    unsigned wt = (unsigned)(tag & 7);
    if (wt != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED) {
      if (skip_value(&p, end, wt, NULL, NULL) != 0)
        return PERFC__PB_OK;
      continue;
    }
    uint64_t n;
    if (read_varint_fast(&p, end, &n) != 0 || n > (uint64_t)(end - p))
      return PERFC__PB_OK;
    body = p;
    body_len = (size_t)n;
    p += n;
    uint32_t id = (uint32_t)(tag >> 3);
    /* Repeated fields come in runs: keep the last lookup. */
    if (f == NULL || f->id != id)
      f = field_of(d, id);
    if (f == NULL)
      continue;
    if (f->type == PROTOBUF_C_TYPE_STRING) {
      if (check == PERFC_STRINGS_RAW)
        continue;
      size_t at;
      perfc__pb_verdict v = perfc__pb_check_string(
          body, body_len, check == PERFC_STRINGS_UTF8, &at);
      if (v != PERFC__PB_OK) {
        bad->msg = d;
        bad->field = f;
        bad->at = at;
        return v;
      }
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
      if (depth == PERFC_PB_MAX_DEPTH) {
        bad->msg = d;
        bad->field = f;
        bad->at = 0;
        return PERFC__PB_TOO_DEEP;
      }
      perfc__pb_verdict v = walk(f->descriptor, body, body + body_len, check,
                                 depth + 1, bad);
      if (v != PERFC__PB_OK)
        return v;
    }
  }
  return PERFC__PB_OK;
}

perfc__pb_verdict perfc__pb_check_strings(const ProtobufCMessageDescriptor *d,
                                          const uint8_t *data, size_t len,
                                          perfc_string_check check,
                                          perfc__pb_bad_field *bad) {
  return walk(d, data, data + len, check, 0, bad);
}

ProtobufCMessage *perfc__pb_unpack(const ProtobufCMessageDescriptor *d,
                                   perfc_string_check check,
                                   ProtobufCAllocator *al, size_t len,
                                   const uint8_t *data, char *why,
                                   size_t why_len) {
  perfc__pb_bad_field bad;
  why[0] = '\0';
  perfc__pb_verdict v = perfc__pb_check_strings(d, data, len, check, &bad);
  if (v == PERFC__PB_TOO_DEEP) {
    snprintf(why, why_len,
             "field %s.%s: messages nested deeper than %d levels",
             bad.msg->name, bad.field->name, PERFC_PB_MAX_DEPTH);
    return NULL;
  }
  if (v != PERFC__PB_OK) {
    snprintf(why, why_len, "field %s.%s: %s at byte %zu", bad.msg->name,
             bad.field->name,
             v == PERFC__PB_NUL ? "string contains a NUL byte"
                                : "string is not valid UTF-8",
             bad.at);
    return NULL;
  }
  return protobuf_c_message_unpack(d, al, len, data);
}
