/* test_pb_wire.c — runtime/src/core/pb_wire.c: the check cache_rpc.c makes
 * before a cache hit sends its stored bytes as the response. Well-formed
 * fields of every wire type are counted; anything else is refused so the
 * bytes are decoded (and reported) instead of sent. pb_wire.c is hidden in
 * libperfc, so this test compiles it itself. */
#include "core/pb_wire_internal.h"

#include <criterion/criterion.h>
#include <google/protobuf/timestamp.pb-c.h>

/* Stored responses are counted as plain fields: fields the descriptor
 * knows (a Timestamp) and every wire type, with multi-byte tags and
 * varints; no bytes at all are an empty message. */
Test(pb_wire, plain_fields_accepts_every_wire_type) {
  Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  ts.seconds = 1767225600;
  ts.nanos = 123456789;
  uint8_t packed[64];
  size_t n = google__protobuf__timestamp__pack(&ts, packed);
  cr_assert_eq(perfc__pb_plain_fields(packed, n), 2);

  static const uint8_t all[] = {
      0x08, 0x96, 0x01,                               /* 1: varint 150 */
      0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* 2: varint -1, */
      0xff, 0xff, 0x01,                               /*    ten bytes */
      0x19, 1, 2, 3, 4, 5, 6, 7, 8,                   /* 3: fixed64 */
      0x22, 0x03, 'a', 'b', 'c',                      /* 4: bytes */
      0x2d, 1, 2, 3, 4,                               /* 5: fixed32 */
      0xba, 0x3e, 0x02, 0x08, 0x01,                   /* 999: a message */
      0x32, 0x00,                                     /* 6: empty bytes */
  };
  cr_assert_eq(perfc__pb_plain_fields(all, sizeof all), 7);
  cr_assert_eq(perfc__pb_plain_fields(all, 0), 0);
}

/* Bytes that are not plain fields are refused, so the caller decodes them
 * (and reports what does not decode) instead of sending them. */
Test(pb_wire, plain_fields_refuses_what_is_not_plain_fields) {
  static const struct {
    const char *what;
    uint8_t bytes[12];
    size_t len;
  } bad[] = {
      {"truncated varint", {0x08, 0x96}, 2},
      {"truncated tag", {0x80}, 1},
      {"length past the end", {0x22, 0x05, 'a', 'b'}, 4},
      {"short fixed64", {0x19, 1, 2, 3}, 4},
      {"short fixed32", {0x2d, 1, 2}, 3},
      {"field number 0", {0x00, 0x01}, 2},
      {"group", {0x0b, 0x0c}, 2},
      {"wire type 7", {0x0f, 0x00}, 2},
      {"eleven-byte varint",
       {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
       12},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_assert_eq(perfc__pb_plain_fields(bad[i].bytes, bad[i].len), -1, "%s",
                 bad[i].what);
}
