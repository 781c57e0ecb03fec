/* test_pb_wire.c — runtime/src/core/pb_wire.c: the check cache_rpc.c makes
 * before a cache hit sends its stored bytes as the response. Well-formed
 * fields of every wire type are counted; anything else is refused so the
 * bytes are decoded (and reported) instead of sent. And the string check
 * every received message gets before protobuf-c unpacks it: NUL bytes and
 * invalid UTF-8 in string fields at any depth, and the depth bound.
 * pb_wire.c is hidden in libperfc; the test reaches it through
 * perfc::testlib. */
#include "core/pb_wire_internal.h"

#include <criterion/criterion.h>
#include <google/protobuf/descriptor.pb-c.h>
#include <google/protobuf/struct.pb-c.h>
#include <google/protobuf/timestamp.pb-c.h>
#include <stdlib.h>
#include <string.h>

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
      {"length one past the end", {0x0a, 0x02, 'a'}, 3},
      {"tag alone at the end", {0x0a, 0x01, 'a', 0x08}, 4},
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

/* The definition perfc__pb_plain_fields() implements, written plainly:
 * the reference for its inline fast path (one-byte tags with a one-byte
 * varint or length). */
static int ref_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
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

static int ref_plain_fields(const uint8_t *p, size_t len) {
  const uint8_t *end = p + len;
  int n = 0;
  while (p < end) {
    uint64_t tag, v;
    if (ref_varint(&p, end, &tag) != 0 || (tag >> 3) == 0 ||
        (tag >> 3) > 0x1fffffff)
      return -1;
    switch (tag & 7) {
    case 0:
      if (ref_varint(&p, end, &v) != 0)
        return -1;
      break;
    case 1:
    case 5:
      v = (tag & 7) == 1 ? 8 : 4;
      if (v > (uint64_t)(end - p))
        return -1;
      p += v;
      break;
    case 2:
      if (ref_varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
        return -1;
      p += v;
      break;
    default:
      return -1;
    }
    n++;
  }
  return n;
}

/* Every sequence of up to three bytes, and pseudo-random longer ones made
 * of likely pieces (short tags, lengths near the end): the same count or
 * the same refusal as the reference. */
Test(pb_wire, plain_fields_matches_its_definition) {
  uint8_t b[24];
  for (uint32_t x = 0; x < (1u << 24); x++) {
    b[0] = (uint8_t)x, b[1] = (uint8_t)(x >> 8), b[2] = (uint8_t)(x >> 16);
    for (size_t len = 1; len <= 3; len++)
      if (len == 3 || (x >> (8 * len)) == 0)
        cr_assert_eq(perfc__pb_plain_fields(b, len), ref_plain_fields(b, len),
                     "bytes %06x, %zu long", x, len);
  }
  static const uint8_t pieces[] = {0x08, 0x0a, 0x10, 0x12, 0x19, 0x1d, 0x7a,
                                   0x80, 0x01, 0x02, 0x03, 0x00, 0x7f, 0xff,
                                   0x0b, 0x0f, 'a'};
  uint64_t r = 88172645463325252ull;
  for (int i = 0; i < 200000; i++) {
    size_t len = 0;
    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
    size_t want = 4 + (size_t)(r % 20);
    while (len < want) {
      r ^= r << 13, r ^= r >> 7, r ^= r << 17;
      b[len++] = pieces[r % sizeof pieces];
    }
    cr_assert_eq(perfc__pb_plain_fields(b, len), ref_plain_fields(b, len),
                 "case %d", i);
  }
}

/* ---- the string check ---------------------------------------------------- */

typedef struct {
  const char *what;
  const char *s;
  size_t len;
  perfc__pb_verdict v;
  size_t at;
} str_case;

#define S(lit) lit, sizeof lit - 1

/* Every kind of ill-formed UTF-8 is refused at the first byte of the bad
 * sequence, including past the 8-byte ASCII fast path; NUL is refused even
 * though it is valid UTF-8 (protobuf-c would cut the C string there). */
Test(pb_wire, check_string_utf8) {
  static const str_case cases[] = {
      {"empty", S(""), PERFC__PB_OK, 0},
      {"ascii", S("hello, world: a string longer than 8"), PERFC__PB_OK, 0},
      {"2-byte", S("gr\xc3\xbc\xc3\x9f" "e"), PERFC__PB_OK, 0},
      {"3-byte", S("\xe2\x82\xac 10 \xe6\x97\xa5\xe6\x9c\xac"), PERFC__PB_OK, 0},
      {"4-byte", S("ok \xf0\x9f\x98\x80 \xf0\x90\x80\x80"), PERFC__PB_OK, 0},
      {"U+D7FF, U+E000, U+FFFF", S("\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf"),
       PERFC__PB_OK, 0},
      {"U+10FFFF", S("\xf4\x8f\xbf\xbf"), PERFC__PB_OK, 0},
      {"NUL", S("Alice\0Admin"), PERFC__PB_NUL, 5},
      {"NUL after the fast path", S("0123456789abc\0"), PERFC__PB_NUL, 13},
      {"NUL first", S("\0"), PERFC__PB_NUL, 0},
      {"overlong 2-byte C0", S("ab\xc0\x80"), PERFC__PB_BAD_UTF8, 2},
      {"overlong 2-byte C1", S("\xc1\xbf"), PERFC__PB_BAD_UTF8, 0},
      {"overlong 3-byte", S("0123456789\xe0\x80\xaf"), PERFC__PB_BAD_UTF8, 10},
      {"overlong 4-byte", S("\xf0\x80\x80\xaf"), PERFC__PB_BAD_UTF8, 0},
      {"surrogate D800", S("x\xed\xa0\x80"), PERFC__PB_BAD_UTF8, 1},
      {"surrogate DFFF", S("\xed\xbf\xbf"), PERFC__PB_BAD_UTF8, 0},
      {"above U+10FFFF (F4 90)", S("\xf4\x90\x80\x80"), PERFC__PB_BAD_UTF8, 0},
      {"F5 lead", S("\xf5\x80\x80\x80"), PERFC__PB_BAD_UTF8, 0},
      {"FF", S("abc\xff"), PERFC__PB_BAD_UTF8, 3},
      {"lone continuation", S("Alice\x80"), PERFC__PB_BAD_UTF8, 5},
      {"truncated at the end", S("euro \xe2\x82"), PERFC__PB_BAD_UTF8, 5},
      {"bad continuation", S("\xe2\x28\xa1"), PERFC__PB_BAD_UTF8, 0},
      {"bad third byte", S("\xe2\x82\x28"), PERFC__PB_BAD_UTF8, 0},
      {"bad fourth byte", S("\xf0\x9f\x98\x28"), PERFC__PB_BAD_UTF8, 0},
      {"Latin-1", S("caf\xe9"), PERFC__PB_BAD_UTF8, 3},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t at = 12345;
    perfc__pb_verdict v = perfc__pb_check_string(
        (const uint8_t *)cases[i].s, cases[i].len, 1, &at);
    cr_assert_eq(v, cases[i].v, "%s: verdict %d", cases[i].what, (int)v);
    if (v != PERFC__PB_OK)
      cr_assert_eq(at, cases[i].at, "%s: at %zu", cases[i].what, at);
  }
}

/* NUL only (proto2 strings need not be UTF-8): bytes pass, NUL does not. */
Test(pb_wire, check_string_nul_only) {
  size_t at = 0;
  cr_assert_eq(perfc__pb_check_string((const uint8_t *)"caf\xe9\xff", 5, 0, &at),
               PERFC__PB_OK);
  cr_assert_eq(perfc__pb_check_string((const uint8_t *)"caf\xe9\0x", 6, 0, &at),
               PERFC__PB_NUL);
  cr_assert_eq(at, 4);
}

/* Packs `m` into a malloc'd buffer. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(*len ? *len : 1);
  cr_assert_not_null(b);
  protobuf_c_message_pack(m, b);
  return b;
}

static perfc__pb_verdict check(const ProtobufCMessageDescriptor *d,
                               const uint8_t *b, size_t len,
                               perfc_string_check mode,
                               perfc__pb_bad_field *bad) {
  memset(bad, 0, sizeof *bad);
  return perfc__pb_check_strings(d, b, len, mode, bad);
}

/* google.protobuf.Value has a string in a oneof; Struct a map<string,
 * Value>; ListValue a repeated Value: a bad string is found at every
 * depth and place, and named by its message and field. */
Test(pb_wire, check_strings_everywhere) {
  perfc__pb_bad_field bad;
  size_t len;

  /* a oneof member at the top */
  Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
  v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
  v.string_value = "ok \xe2\x82\xac";
  uint8_t *b = pack(&v.base, &len);
  cr_assert_eq(check(&google__protobuf__value__descriptor, b, len,
                     PERFC_STRINGS_UTF8, &bad),
               PERFC__PB_OK);
  free(b);
  v.string_value = "bad \xc0\xaf";
  b = pack(&v.base, &len);
  cr_assert_eq(check(&google__protobuf__value__descriptor, b, len,
                     PERFC_STRINGS_UTF8, &bad),
               PERFC__PB_BAD_UTF8);
  cr_assert_str_eq(bad.msg->name, "google.protobuf.Value");
  cr_assert_str_eq(bad.field->name, "string_value");
  cr_assert_eq(bad.at, 4);
  /* the same bytes: NUL-only passes them, raw checks nothing */
  cr_assert_eq(check(&google__protobuf__value__descriptor, b, len,
                     PERFC_STRINGS_NO_NUL, &bad),
               PERFC__PB_OK);
  cr_assert_eq(check(&google__protobuf__value__descriptor, b, len,
                     PERFC_STRINGS_RAW, &bad),
               PERFC__PB_OK);
  free(b);

  /* a map key and a map value inside a Struct inside a ListValue */
  Google__Protobuf__Value inner = GOOGLE__PROTOBUF__VALUE__INIT;
  inner.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
  inner.string_value = "fine";
  Google__Protobuf__Struct__FieldsEntry e1 =
      GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
  e1.key = "first";
  e1.value = &inner;
  Google__Protobuf__Struct__FieldsEntry e2 =
      GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
  e2.key = "second";
  e2.value = &inner;
  Google__Protobuf__Struct__FieldsEntry *entries[] = {&e1, &e2};
  Google__Protobuf__Struct st = GOOGLE__PROTOBUF__STRUCT__INIT;
  st.n_fields = 2;
  st.fields = entries;
  Google__Protobuf__Value sv = GOOGLE__PROTOBUF__VALUE__INIT;
  sv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
  sv.struct_value = &st;
  Google__Protobuf__Value *items[] = {&inner, &sv};
  Google__Protobuf__ListValue lv = GOOGLE__PROTOBUF__LIST_VALUE__INIT;
  lv.n_values = 2;
  lv.values = items;

  b = pack(&lv.base, &len);
  cr_assert_eq(check(&google__protobuf__list_value__descriptor, b, len,
                     PERFC_STRINGS_UTF8, &bad),
               PERFC__PB_OK);
  free(b);

  e2.key = "sec\xed\xa0\x80nd"; /* a surrogate in the second map key */
  b = pack(&lv.base, &len);
  cr_assert_eq(check(&google__protobuf__list_value__descriptor, b, len,
                     PERFC_STRINGS_UTF8, &bad),
               PERFC__PB_BAD_UTF8);
  cr_assert_str_eq(bad.msg->name, "google.protobuf.Struct.FieldsEntry");
  cr_assert_str_eq(bad.field->name, "key");
  cr_assert_eq(bad.at, 3);
  free(b);

  /* protobuf-c cannot pack a string with a NUL inside, so the map value's
   * NUL is written into the packed bytes: "fine" -> "fi\0e" in the second
   * element's Value (the last occurrence of "fine"). */
  e2.key = "second";
  b = pack(&lv.base, &len);
  uint8_t *last = NULL;
  for (size_t i = 0; i + 4 <= len; i++)
    if (memcmp(b + i, "fine", 4) == 0)
      last = b + i;
  cr_assert_not_null(last);
  last[2] = 0;
  cr_assert_eq(check(&google__protobuf__list_value__descriptor, b, len,
                     PERFC_STRINGS_UTF8, &bad),
               PERFC__PB_NUL);
  cr_assert_str_eq(bad.msg->name, "google.protobuf.Value");
  cr_assert_str_eq(bad.field->name, "string_value");
  cr_assert_eq(bad.at, 2);
  cr_assert_eq(check(&google__protobuf__list_value__descriptor, b, len,
                     PERFC_STRINGS_NO_NUL, &bad),
               PERFC__PB_NUL);
  cr_assert_eq(check(&google__protobuf__list_value__descriptor, b, len,
                     PERFC_STRINGS_RAW, &bad),
               PERFC__PB_OK);
  free(b);
}

/* `k` times Value{list_value: ListValue{values: [...]}} around a Value
 * holding a string: the innermost Value sits at depth 2k. */
static uint8_t *nested(unsigned k, size_t *len) {
  size_t cap = 16 + (size_t)k * 12, n = 0;
  uint8_t *b = malloc(cap);
  cr_assert_not_null(b);
  b[n++] = 0x1a; /* Value.string_value = "x" */
  b[n++] = 1;
  b[n++] = 'x';
  for (unsigned i = 0; i < 2 * k; i++) {
    /* ListValue.values (1) around a Value, then Value.list_value (6)
     * around the ListValue; lengths < 2^14 take at most two bytes. */
    uint8_t hdr[3];
    size_t h = 0;
    hdr[h++] = (i % 2 == 0) ? 0x0a : 0x32;
    if (n < 128) {
      hdr[h++] = (uint8_t)n;
    } else {
      hdr[h++] = (uint8_t)(n | 0x80);
      hdr[h++] = (uint8_t)(n >> 7);
    }
    memmove(b + h, b, n);
    memcpy(b, hdr, h);
    n += h;
  }
  *len = n;
  return b;
}

/* Messages nest at most PERFC_PB_MAX_DEPTH levels, in every mode (raw
 * too: the bound protects protobuf-c's recursion, not the strings). */
Test(pb_wire, depth_bound) {
  perfc__pb_bad_field bad;
  size_t len;
  uint8_t *b = nested(PERFC_PB_MAX_DEPTH / 2, &len); /* deepest at 100 */
  for (int mode = 0; mode <= 2; mode++)
    cr_assert_eq(check(&google__protobuf__value__descriptor, b, len,
                       (perfc_string_check)mode, &bad),
                 PERFC__PB_OK, "mode %d", mode);
  ProtobufCMessage *m =
      protobuf_c_message_unpack(&google__protobuf__value__descriptor, NULL, len, b);
  cr_assert_not_null(m, "the test's bytes are a well-formed Value");
  protobuf_c_message_free_unpacked(m, NULL);
  free(b);

  b = nested(PERFC_PB_MAX_DEPTH / 2 + 1, &len); /* a ListValue at 101 */
  for (int mode = 0; mode <= 2; mode++) {
    cr_assert_eq(check(&google__protobuf__value__descriptor, b, len,
                       (perfc_string_check)mode, &bad),
                 PERFC__PB_TOO_DEEP, "mode %d", mode);
    cr_assert_str_eq(bad.field->name, "list_value");
  }
  char why[256];
  cr_assert_null(perfc__pb_unpack(&google__protobuf__value__descriptor,
                                  PERFC_STRINGS_RAW, NULL, len, b, why,
                                  sizeof why));
  cr_assert_str_eq(why, "field google.protobuf.Value.list_value: messages "
                        "nested deeper than 100 levels");
  free(b);
}

/* The walk reads fields as protobuf-c does: a field protobuf-c accepts as
 * unknown (number 0 in a two-byte tag, which its one-byte check misses)
 * does not end the walk before a string that follows it. Bytes that do
 * not parse end it quietly; protobuf-c then refuses them. */
Test(pb_wire, walk_follows_protobuf_c) {
  static const uint8_t sneaky[] = {0x80, 0x00, 0x01, /* field 0, varint */
                                   0x1a, 0x03, 'a',  0x00, 'b'};
  perfc__pb_bad_field bad;
  ProtobufCMessage *m = protobuf_c_message_unpack(
      &google__protobuf__value__descriptor, NULL, sizeof sneaky, sneaky);
  cr_assert_not_null(m, "protobuf-c accepts these bytes");
  protobuf_c_message_free_unpacked(m, NULL);
  cr_assert_eq(check(&google__protobuf__value__descriptor, sneaky,
                     sizeof sneaky, PERFC_STRINGS_UTF8, &bad),
               PERFC__PB_NUL);

  static const uint8_t truncated[] = {0x1a, 0x09, 'a', 0x00};
  cr_assert_eq(check(&google__protobuf__value__descriptor, truncated,
                     sizeof truncated, PERFC_STRINGS_UTF8, &bad),
               PERFC__PB_OK);
  char why[256];
  cr_assert_null(perfc__pb_unpack(&google__protobuf__value__descriptor,
                                  PERFC_STRINGS_UTF8, NULL, sizeof truncated,
                                  truncated, why, sizeof why));
  cr_assert_str_eq(why, "", "malformed: the caller's own message");
}

/* perfc__pb_unpack: the refusal's text names the field and the byte; the
 * raw mode hands protobuf-c's C string over (cut at the NUL). */
Test(pb_wire, unpack_checked) {
  static const uint8_t alice[] = {0x1a, 0x0b, 'A', 'l', 'i', 'c', 'e', 0x00,
                                  'A',  'd',  'm', 'i', 'n'};
  static const uint8_t latin1[] = {0x1a, 0x04, 'c', 'a', 'f', 0xe9};
  char why[256];
  cr_assert_null(perfc__pb_unpack(&google__protobuf__value__descriptor,
                                  PERFC_STRINGS_UTF8, NULL, sizeof alice,
                                  alice, why, sizeof why));
  cr_assert_str_eq(why, "field google.protobuf.Value.string_value: string "
                        "contains a NUL byte at byte 5");
  cr_assert_null(perfc__pb_unpack(&google__protobuf__value__descriptor,
                                  PERFC_STRINGS_NO_NUL, NULL, sizeof alice,
                                  alice, why, sizeof why));
  cr_assert_null(perfc__pb_unpack(&google__protobuf__value__descriptor,
                                  PERFC_STRINGS_UTF8, NULL, sizeof latin1,
                                  latin1, why, sizeof why));
  cr_assert_str_eq(why, "field google.protobuf.Value.string_value: string "
                        "is not valid UTF-8 at byte 3");

  Google__Protobuf__Value *v = (Google__Protobuf__Value *)perfc__pb_unpack(
      &google__protobuf__value__descriptor, PERFC_STRINGS_NO_NUL, NULL,
      sizeof latin1, latin1, why, sizeof why);
  cr_assert_not_null(v);
  cr_assert_str_eq(v->string_value, "caf\xe9");
  protobuf_c_message_free_unpacked(&v->base, NULL);

  v = (Google__Protobuf__Value *)perfc__pb_unpack(
      &google__protobuf__value__descriptor, PERFC_STRINGS_RAW, NULL,
      sizeof alice, alice, why, sizeof why);
  cr_assert_not_null(v);
  cr_assert_str_eq(v->string_value, "Alice", "protobuf-c cuts at the NUL");
  protobuf_c_message_free_unpacked(&v->base, NULL);

  /* a short buffer still gets a terminated, cut message */
  char small[16];
  cr_assert_null(perfc__pb_unpack(&google__protobuf__value__descriptor,
                                  PERFC_STRINGS_UTF8, NULL, sizeof alice,
                                  alice, small, sizeof small));
  cr_assert_eq(strlen(small), sizeof small - 1);
}

/* Field numbers with gaps (MethodOptions: 33, 34, 999) go through
 * protobuf-c's range search instead of the direct index: a string behind
 * field 999, in a proto2 message, is still found. */
Test(pb_wire, fields_numbered_with_gaps) {
  /* MethodOptions{uninterpreted_option (999): UninterpretedOption{
   *   identifier_value (3): "a\0b"}}, after deprecated (33) = true */
  static const uint8_t b[] = {0x88, 0x02, 0x01,       /* 33: varint 1 */
                              0xba, 0x3e, 0x05,       /* 999, 5 bytes */
                              0x1a, 0x03, 'a', 0, 'b'};
  perfc__pb_bad_field bad;
  ProtobufCMessage *m = protobuf_c_message_unpack(
      &google__protobuf__method_options__descriptor, NULL, sizeof b, b);
  cr_assert_not_null(m, "the test's bytes are a well-formed MethodOptions");
  protobuf_c_message_free_unpacked(m, NULL);
  cr_assert_eq(check(&google__protobuf__method_options__descriptor, b,
                     sizeof b, PERFC_STRINGS_NO_NUL, &bad),
               PERFC__PB_NUL);
  cr_assert_str_eq(bad.msg->name, "google.protobuf.UninterpretedOption");
  cr_assert_str_eq(bad.field->name, "identifier_value");
  cr_assert_eq(bad.at, 1);
}
