/*
 * pb_wire_internal.h — protobuf wire-format walks: the check cache_rpc.c
 * makes of stored bytes, and the string check every received message gets
 * before protobuf-c unpacks it (server.c, client.c, client_stream.c). Never
 * installed.
 *
 * Room: runtime/src/core private header.
 */
#ifndef PERFC_PB_WIRE_INTERNAL_H
#define PERFC_PB_WIRE_INTERNAL_H

#include "perfc/service.h"

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* The number of top-level fields in the `len` bytes at `data` (0 for none)
 * when they are a sequence of well-formed varint, 64-bit, length-delimited
 * or 32-bit fields with numbers 1..2^29-1; -1 otherwise (truncated, a
 * group, an invalid wire type or field number). */
int perfc__pb_plain_fields(const uint8_t *data, size_t len);

/* How deep messages may nest in a received message: the top-level message
 * is depth 0, a message field of it depth 1. protobuf's own parsers stop at
 * 100 too (C++'s default recursion limit); protobuf-c has no limit and
 * recurses once per level, so without this bound a small request of nested
 * messages could exhaust a thread's stack. */
#define PERFC_PB_MAX_DEPTH 100

/* What perfc__pb_check_strings found. */
typedef enum perfc__pb_verdict {
  PERFC__PB_OK = 0,       /* nothing wrong (or bytes protobuf-c will refuse) */
  PERFC__PB_NUL = 1,      /* a string field holds a NUL byte */
  PERFC__PB_BAD_UTF8 = 2, /* a string field is not valid UTF-8 */
  PERFC__PB_TOO_DEEP = 3  /* messages nested deeper than PERFC_PB_MAX_DEPTH */
} perfc__pb_verdict;

/* Where: the field (and the message type holding it) and the byte offset
 * within the string. For PERFC__PB_TOO_DEEP the field is the message field
 * that went one level too deep and `at` is 0. */
typedef struct perfc__pb_bad_field {
  const ProtobufCMessageDescriptor *msg;
  const ProtobufCFieldDescriptor *field;
  size_t at;
} perfc__pb_bad_field;

/* Checks `len` bytes at `s` as a string: no NUL byte and, when `utf8`,
 * well-formed UTF-8 (no overlong forms, no surrogates, nothing above
 * U+10FFFF, no truncated sequence). Returns PERFC__PB_OK or the verdict,
 * with the offset of the offending byte (a bad sequence's first byte) in
 * *at. */
perfc__pb_verdict perfc__pb_check_string(const uint8_t *s, size_t len,
                                         int utf8, size_t *at);

/* Walks the `len` bytes at `data` as a message of type `d`: checks every
 * string field, at every depth (singular, repeated, oneof members, map
 * keys and values, nested messages), with perfc__pb_check_string as
 * `check` says (PERFC_STRINGS_UTF8: NUL and UTF-8; PERFC_STRINGS_NO_NUL:
 * NUL only; PERFC_STRINGS_RAW: none), and in every mode the nesting depth.
 * Bytes that are not a well-formed message end the walk with PERFC__PB_OK:
 * protobuf-c's unpack, run next, refuses them and says so. Nothing is
 * allocated; recursion is bounded by PERFC_PB_MAX_DEPTH. */
perfc__pb_verdict perfc__pb_check_strings(const ProtobufCMessageDescriptor *d,
                                          const uint8_t *data, size_t len,
                                          perfc_string_check check,
                                          perfc__pb_bad_field *bad);

/* protobuf_c_message_unpack() after the checks `check` asks for (see
 * perfc__pb_check_strings; PERFC_STRINGS_RAW still bounds the depth).
 * Returns the message; or NULL with `why` (`why_len` bytes,
 * always terminated) holding "field a.b.Req.name: string contains a NUL
 * byte at byte 5" and the like, or "" when the bytes do not parse. */
ProtobufCMessage *perfc__pb_unpack(const ProtobufCMessageDescriptor *d,
                                   perfc_string_check check,
                                   ProtobufCAllocator *al, size_t len,
                                   const uint8_t *data, char *why,
                                   size_t why_len);

#endif /* PERFC_PB_WIRE_INTERNAL_H */
