/*
 * test_gateway_json.c — the proto3 JSON mapping (runtime/src/gateway/
 * json_decode.c, json_encode.c, json_parse.c): conformance cases written
 * from https://protobuf.dev/programming-guides/proto3/#json, one group per
 * rule, with the exact output and the exact error text (field path first).
 */
#include "perfc/gateway.h"

#include "gateway/json_internal.h" /* perfc__gateway_encode_bytes */
#include "gw.pb-c.h"
#include "gw.perfc.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static perfc_arena *arena;

static void setup(void) { cr_assert_eq(perfc_arena_new(&arena, 0), 0); }
static void teardown(void) { perfc_arena_free(arena); }

TestSuite(gateway_json, .init = setup, .fini = teardown);

static Gw__V1__All *dec_opts(const char *json, const perfc_json_opts *o) {
  ProtobufCMessage *m = NULL;
  int rc = perfc_json_decode(&gw__v1__all__descriptor, json, strlen(json), o,
                             arena, &m);
  cr_assert_eq(rc, 0, "decode %s: %d %s", json, rc, perfc_last_error());
  return (Gw__V1__All *)m;
}

static Gw__V1__All *dec(const char *json) { return dec_opts(json, NULL); }

static const char *fail_opts(const char *json, int want,
                             const perfc_json_opts *o) {
  ProtobufCMessage *m = NULL;
  int rc = perfc_json_decode(&gw__v1__all__descriptor, json, strlen(json), o,
                             arena, &m);
  cr_assert_eq(rc, want, "decode %s: got %d (%s), want %d", json, rc,
               perfc_last_error(), want);
  return perfc_last_error();
}

static const char *fail(const char *json) {
  return fail_opts(json, PERFC_EPARSE, NULL);
}

static const char *enc_opts(const void *msg, const perfc_json_opts *o) {
  char *out = NULL;
  size_t len = 0;
  int rc = perfc_json_encode(msg, o, arena, &out, &len);
  cr_assert_eq(rc, 0, "encode: %d %s", rc, perfc_last_error());
  cr_assert_eq(strlen(out), len);
  return out;
}

static const char *enc(const void *msg) { return enc_opts(msg, NULL); }

/* decode then encode: the canonical form. */
static void canon(const char *in, const char *want) {
  cr_assert_str_eq(enc(dec(in)), want, "for %s", in);
}

Test(gateway_json, names_lower_camel_out_both_in) {
  Gw__V1__All *m = dec("{\"snakeCaseName\":\"a\"}");
  cr_assert_str_eq(m->snake_case_name, "a");
  m = dec("{\"snake_case_name\":\"b\"}");
  cr_assert_str_eq(m->snake_case_name, "b");
  cr_assert_str_eq(enc(m), "{\"snakeCaseName\":\"b\"}");
  perfc_json_opts o = {.use_proto_names = true};
  cr_assert_str_eq(enc_opts(m, &o), "{\"snake_case_name\":\"b\"}");
}

Test(gateway_json, int64_are_strings_out_numbers_or_strings_in) {
  Gw__V1__All *m = dec("{\"i64\":\"-9007199254740993\",\"u64\":"
                       "\"18446744073709551615\",\"s64\":12,\"f64\":\"7\","
                       "\"sf64\":-3,\"i32\":\"42\",\"u32\":4294967295}");
  cr_assert_eq(m->i64, -9007199254740993LL);
  cr_assert_eq(m->u64, UINT64_MAX);
  cr_assert_eq(m->s64, 12);
  cr_assert_eq(m->f64, 7);
  cr_assert_eq(m->sf64, -3);
  cr_assert_eq(m->i32, 42);
  cr_assert_eq(m->u32, UINT32_MAX);
  cr_assert_str_eq(enc(m),
                   "{\"i32\":42,\"i64\":\"-9007199254740993\",\"u32\":"
                   "4294967295,\"u64\":\"18446744073709551615\",\"s64\":"
                   "\"12\",\"f64\":\"7\",\"sf64\":\"-3\"}");
  /* Exponents and integral fractions are integers too. */
  m = dec("{\"i32\":1e2,\"i64\":\"2.0\"}");
  cr_assert_eq(m->i32, 100);
  cr_assert_eq(m->i64, 2);
}

Test(gateway_json, integer_errors_name_the_field) {
  cr_assert_str_eq(fail("{\"i32\":2147483648}"),
                   "json: i32: 2147483648 is out of range (-2147483648 to "
                   "2147483647)");
  cr_assert_str_eq(fail("{\"i64\":1.5}"), "json: i64: \"1.5\" is not an integer");
  cr_assert_str_eq(fail("{\"u32\":-1}"),
                   "json: u32: -1 is negative; the field is unsigned");
  cr_assert_str_eq(fail("{\"u64\":\"18446744073709551616\"}"),
                   "json: u64: 18446744073709551616 is out of range (0 to "
                   "18446744073709551615)");
  cr_assert_str_eq(fail("{\"i32\":true}"),
                   "json: i32: expected an integer, got a bool");
  cr_assert_str_eq(fail("{\"i64\":\"12abc\"}"),
                   "json: i64: \"12abc\" is not an integer");
}

Test(gateway_json, floats_nan_infinity) {
  Gw__V1__All *m = dec("{\"db\":\"NaN\",\"fl\":\"-Infinity\"}");
  cr_assert(isnan(m->db));
  cr_assert(isinf(m->fl) && m->fl < 0);
  cr_assert_str_eq(enc(m), "{\"fl\":\"-Infinity\",\"db\":\"NaN\"}");
  canon("{\"db\":\"Infinity\"}", "{\"db\":\"Infinity\"}");
  canon("{\"db\":0.1,\"fl\":0.1}", "{\"fl\":0.1,\"db\":0.1}");
  canon("{\"db\":\"1.5e300\"}", "{\"db\":1.5e+300}");
  cr_assert_str_eq(fail("{\"fl\":1e39}"), "json: fl: 1e39 is out of range for float");
  cr_assert_str_eq(fail("{\"db\":\"nan\"}"),
                   "json: db: \"nan\" is not a number (or \"NaN\", "
                   "\"Infinity\", \"-Infinity\")");
}

Test(gateway_json, bools_and_strings) {
  canon("{\"b\":true,\"str\":\"h\\u00e9 \\\"q\\\"\\n\"}",
        "{\"b\":true,\"str\":\"h\xc3\xa9 \\\"q\\\"\\n\"}");
  cr_assert_str_eq(fail("{\"b\":\"true\"}"),
                   "json: b: expected true or false, got a string");
  cr_assert_str_eq(fail("{\"str\":5}"), "json: str: expected a string, got a number");
  /* protobuf-c strings are C strings: an embedded NUL would cut them. */
  cr_assert_str_eq(fail("{\"str\":\"a\\u0000b\"}"),
                   "json: a string or name contains \\u0000, which "
                   "protobuf-c's C strings cannot hold");
  /* Invalid UTF-8 is refused by the parser. */
  fail("{\"str\":\"\xff\"}");
}

Test(gateway_json, bytes_base64_std_and_url_safe) {
  Gw__V1__All *m = dec("{\"by\":\"+/8=\"}");
  cr_assert_eq(m->by.len, 2);
  cr_assert_eq(m->by.data[0], 0xfb);
  cr_assert_eq(m->by.data[1], 0xff);
  m = dec("{\"by\":\"-_8\"}"); /* URL-safe, unpadded */
  cr_assert_eq(m->by.len, 2);
  cr_assert_eq(m->by.data[0], 0xfb);
  cr_assert_eq(m->by.data[1], 0xff);
  cr_assert_str_eq(enc(m), "{\"by\":\"+/8=\"}");
  canon("{\"by\":\"aGVsbG8gd29ybGQ=\"}", "{\"by\":\"aGVsbG8gd29ybGQ=\"}");
  cr_assert_str_eq(fail("{\"by\":\"a$==\"}"),
                   "json: by: not base64 (standard or URL-safe alphabet)");
}

Test(gateway_json, enums_names_and_numbers) {
  Gw__V1__All *m = dec("{\"color\":\"GREEN\",\"rColor\":[\"RED\",2,7]}");
  cr_assert_eq(m->color, GW__V1__COLOR__GREEN);
  cr_assert_eq(m->n_r_color, 3);
  cr_assert_eq(m->r_color[2], 7);
  cr_assert_str_eq(enc(m), "{\"color\":\"GREEN\",\"rColor\":[\"RED\",\"GREEN\",7]}");
  perfc_json_opts o = {.enums_as_ints = true};
  cr_assert_str_eq(enc_opts(m, &o), "{\"color\":2,\"rColor\":[1,2,7]}");
  cr_assert_str_eq(fail("{\"color\":\"BLUE\"}"),
                   "json: color: \"BLUE\" is not a value of gw.v1.Color");
}

Test(gateway_json, repeated_and_nested) {
  canon("{\"rI32\":[1,2,3],\"rStr\":[\"a\"],\"rInner\":[{\"n\":1},{}],"
        "\"inner\":{\"child\":{\"s\":\"x\"}}}",
        "{\"inner\":{\"child\":{\"s\":\"x\"}},\"rI32\":[1,2,3],\"rStr\":[\"a\"],"
        "\"rInner\":[{\"n\":1},{}]}");
  cr_assert_str_eq(fail("{\"rInner\":[{},{\"n\":true}]}"),
                   "json: rInner[1].n: expected an integer, got a bool");
  cr_assert_str_eq(fail("{\"inner\":{\"child\":{\"s\":[]}}}"),
                   "json: inner.child.s: expected a string, got an array");
  cr_assert_str_eq(fail("{\"rI32\":5}"), "json: rI32: expected an array, got a number");
  cr_assert_str_eq(fail("{\"rI32\":[1,null]}"),
                   "json: rI32[1]: null is not a value of a repeated field");
}

Test(gateway_json, maps_with_string_int_and_bool_keys) {
  Gw__V1__All *m = dec("{\"mStrInt\":{\"a\":1,\"b\":2},\"mIntStr\":{\"-5\":"
                       "\"x\"},\"mBoolInner\":{\"true\":{\"n\":3}}}");
  cr_assert_eq(m->n_m_str_int, 2);
  cr_assert_str_eq(m->m_str_int[1]->key, "b");
  cr_assert_eq(m->m_str_int[1]->value, 2);
  cr_assert_eq(m->m_int_str[0]->key, -5);
  cr_assert_eq(m->m_bool_inner[0]->key, 1);
  cr_assert_eq(m->m_bool_inner[0]->value->n, 3);
  cr_assert_str_eq(enc(m), "{\"mStrInt\":{\"a\":1,\"b\":2},\"mIntStr\":{\"-5\":"
                           "\"x\"},\"mBoolInner\":{\"true\":{\"n\":3}}}");
  cr_assert_str_eq(fail("{\"mIntStr\":{\"x\":\"y\"}}"),
                   "json: mIntStr.x: \"x\" is not an integer");
  cr_assert_str_eq(fail("{\"mStrInt\":[]}"),
                   "json: mStrInt: expected an object (a map), got an array");
}

Test(gateway_json, oneof_one_member_at_most) {
  Gw__V1__All *m = dec("{\"oInt\":\"9\"}");
  cr_assert_eq(m->choice_case, GW__V1__ALL__CHOICE_O_INT);
  cr_assert_eq(m->o_int, 9);
  cr_assert_str_eq(enc(m), "{\"oInt\":\"9\"}");
  m = dec("{\"oInner\":{}}");
  cr_assert_eq(m->choice_case, GW__V1__ALL__CHOICE_O_INNER);
  cr_assert_str_eq(enc(m), "{\"oInner\":{}}");
  /* A member set to null does not count. */
  m = dec("{\"oStr\":null,\"oInt\":1}");
  cr_assert_eq(m->choice_case, GW__V1__ALL__CHOICE_O_INT);
  cr_assert_str_eq(fail("{\"oStr\":\"x\",\"oInt\":1}"),
                   "json: oInt: fields \"o_str\" and \"o_int\" are members of "
                   "one oneof; set at most one");
}

Test(gateway_json, null_means_default) {
  Gw__V1__All *m = dec("{\"i32\":null,\"inner\":null,\"str\":null,"
                       "\"rI32\":null,\"ts\":null,\"color\":null}");
  cr_assert_eq(m->i32, 0);
  cr_assert_null(m->inner);
  cr_assert_null(m->ts);
  cr_assert_str_eq(enc(m), "{}");
}

Test(gateway_json, timestamp_rfc3339) {
  Gw__V1__All *m = dec("{\"ts\":\"1972-01-01T10:00:20.021Z\"}");
  cr_assert_eq(m->ts->seconds, 63108020);
  cr_assert_eq(m->ts->nanos, 21000000);
  cr_assert_str_eq(enc(m), "{\"ts\":\"1972-01-01T10:00:20.021Z\"}");
  canon("{\"ts\":\"1972-01-01T10:00:20.021-05:00\"}",
        "{\"ts\":\"1972-01-01T15:00:20.021Z\"}");
  canon("{\"ts\":\"0001-01-01T00:00:00Z\"}", "{\"ts\":\"0001-01-01T00:00:00Z\"}");
  canon("{\"ts\":\"9999-12-31T23:59:59.999999999Z\"}",
        "{\"ts\":\"9999-12-31T23:59:59.999999999Z\"}");
  canon("{\"ts\":\"1969-12-31T23:59:59.000001Z\"}",
        "{\"ts\":\"1969-12-31T23:59:59.000001Z\"}");
  canon("{\"ts\":\"2024-02-29T12:00:00Z\"}", "{\"ts\":\"2024-02-29T12:00:00Z\"}");
  const char *e = fail("{\"ts\":\"2023-02-29T00:00:00Z\"}");
  cr_assert(strstr(e, "json: ts: \"2023-02-29T00:00:00Z\" is not an RFC 3339 "
                      "timestamp") == e,
            "%s", e);
  fail("{\"ts\":\"1972-01-01 10:00:20Z\"}");
  fail("{\"ts\":\"1972-01-01T10:00:20\"}");
  fail("{\"ts\":\"1972-01-01T10:00:20.1234567891Z\"}");
  fail("{\"ts\":12}");
  /* Out of range on output is an error, not a wrong text. */
  Gw__V1__All out = GW__V1__ALL__INIT;
  Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  t.seconds = 253402300800LL;
  out.ts = &t;
  char *s;
  size_t len;
  cr_assert_eq(perfc_json_encode(&out.base, NULL, arena, &s, &len), PERFC_EINVAL);
}

Test(gateway_json, duration) {
  Gw__V1__All *m = dec("{\"dur\":\"1.000340012s\"}");
  cr_assert_eq(m->dur->seconds, 1);
  cr_assert_eq(m->dur->nanos, 340012);
  cr_assert_str_eq(enc(m), "{\"dur\":\"1.000340012s\"}");
  m = dec("{\"dur\":\"-1.5s\"}");
  cr_assert_eq(m->dur->seconds, -1);
  cr_assert_eq(m->dur->nanos, -500000000);
  cr_assert_str_eq(enc(m), "{\"dur\":\"-1.500s\"}");
  canon("{\"dur\":\"-0.000001s\"}", "{\"dur\":\"-0.000001s\"}");
  canon("{\"dur\":\"3s\"}", "{\"dur\":\"3s\"}");
  fail("{\"dur\":\"1\"}");
  fail("{\"dur\":\"1.s\"}");
  fail("{\"dur\":\"315576000001s\"}");
}

Test(gateway_json, field_mask_camel_paths) {
  Gw__V1__All *m = dec("{\"mask\":\"fooBar,baz.quxQuux\"}");
  cr_assert_eq(m->mask->n_paths, 2);
  cr_assert_str_eq(m->mask->paths[0], "foo_bar");
  cr_assert_str_eq(m->mask->paths[1], "baz.qux_quux");
  cr_assert_str_eq(enc(m), "{\"mask\":\"fooBar,baz.quxQuux\"}");
  canon("{\"mask\":\"\"}", "{\"mask\":\"\"}");
  cr_assert_str_eq(fail("{\"mask\":\"a_b\"}"),
                   "json: mask: field mask path \"a_b\" must be "
                   "lowerCamelCase (no '_')");
}

Test(gateway_json, wrappers_are_their_value) {
  Gw__V1__All *m = dec("{\"wI64\":\"5\",\"wStr\":\"x\",\"wBool\":false,"
                       "\"wDbl\":1.5,\"wBytes\":\"AQI=\",\"wU32\":7}");
  cr_assert_eq(m->w_i64->value, 5);
  cr_assert_str_eq(m->w_str->value, "x");
  cr_assert_not_null(m->w_bool);
  cr_assert_eq(m->w_bool->value, 0);
  cr_assert_eq(m->w_bytes->value.len, 2);
  cr_assert_str_eq(enc(m), "{\"wI64\":\"5\",\"wStr\":\"x\",\"wBool\":false,"
                           "\"wDbl\":1.5,\"wBytes\":\"AQI=\",\"wU32\":7}");
  m = dec("{\"wI64\":null}");
  cr_assert_null(m->w_i64);
  cr_assert_str_eq(fail("{\"wI64\":\"x\"}"), "json: wI64.value: \"x\" is not an integer");
}

Test(gateway_json, struct_value_list_value) {
  canon("{\"st\":{\"a\":1,\"b\":[true,null,\"x\",{\"c\":{}}],\"d\":null}}",
        "{\"st\":{\"a\":1,\"b\":[true,null,\"x\",{\"c\":{}}],\"d\":null}}");
  canon("{\"val\":null}", "{\"val\":null}");
  canon("{\"val\":\"s\"}", "{\"val\":\"s\"}");
  canon("{\"val\":[1,{\"k\":false}]}", "{\"val\":[1,{\"k\":false}]}");
  canon("{\"lv\":[1,\"a\",null]}", "{\"lv\":[1,\"a\",null]}");
  canon("{\"rVal\":[null,2]}", "{\"rVal\":[null,2]}");
  canon("{\"mVal\":{\"k\":null}}", "{\"mVal\":{\"k\":null}}");
  Gw__V1__All *m = dec("{\"val\":null}");
  cr_assert_not_null(m->val);
  cr_assert_eq(m->val->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
  cr_assert_str_eq(fail("{\"st\":[1]}"),
                   "json: st: expected an object (google.protobuf.Struct), "
                   "got an array");
  /* A Value cannot hold NaN in JSON. */
  Gw__V1__All out = GW__V1__ALL__INIT;
  Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
  v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
  v.number_value = NAN;
  out.val = &v;
  char *s;
  size_t len;
  cr_assert_eq(perfc_json_encode(&out.base, NULL, arena, &s, &len), PERFC_EINVAL);
  cr_assert_str_eq(perfc_last_error(),
                   "json: val: google.protobuf.Value cannot hold NaN or "
                   "Infinity in JSON");
}

Test(gateway_json, empty) {
  Gw__V1__All *m = dec("{\"empty\":{}}");
  cr_assert_not_null(m->empty);
  cr_assert_str_eq(enc(m), "{\"empty\":{}}");
}

static const ProtobufCMessageDescriptor *resolve_gw(const char *name,
                                                    void *ud) {
  (void)ud;
  return strcmp(name, "gw.v1.Inner") == 0 ? &gw__v1__inner__descriptor : NULL;
}

Test(gateway_json, any_with_a_message_and_a_wkt) {
  perfc_json_opts o = {.resolve_type = resolve_gw};
  const char *in = "{\"any\":{\"@type\":\"type.googleapis.com/gw.v1.Inner\","
                   "\"n\":3,\"s\":\"x\"}}";
  Gw__V1__All *m = dec_opts(in, &o);
  cr_assert_str_eq(m->any->type_url, "type.googleapis.com/gw.v1.Inner");
  Gw__V1__Inner *inner = gw__v1__inner__unpack(NULL, m->any->value.len,
                                               m->any->value.data);
  cr_assert_not_null(inner);
  cr_assert_eq(inner->n, 3);
  cr_assert_str_eq(inner->s, "x");
  gw__v1__inner__free_unpacked(inner, NULL);
  cr_assert_str_eq(enc_opts(m, &o), in);
  /* "@type" last is fine: the decoder reads a tree. */
  m = dec_opts("{\"any\":{\"n\":4,\"@type\":\"type.googleapis.com/gw.v1.Inner\"}}", &o);
  cr_assert_gt(m->any->value.len, 0);
  /* A well-known type's special form sits under "value". */
  const char *wkt = "{\"any\":{\"@type\":\"type.googleapis.com/"
                    "google.protobuf.Duration\",\"value\":\"1.5s\"}}";
  cr_assert_str_eq(enc(dec(wkt)),
                   "{\"any\":{\"@type\":\"type.googleapis.com/"
                   "google.protobuf.Duration\",\"value\":\"1.500s\"}}");
  cr_assert_str_eq(fail("{\"any\":{\"@type\":\"type.googleapis.com/x.Y\"}}"),
                   "json: any: google.protobuf.Any: type "
                   "\"type.googleapis.com/x.Y\" is not known to this server");
  cr_assert_str_eq(fail("{\"any\":{\"n\":1}}"),
                   "json: any: google.protobuf.Any needs a string \"@type\"");
}

Test(gateway_json, unknown_fields_ignored_or_rejected) {
  Gw__V1__All *m = dec("{\"nope\":{\"deep\":[1,2]},\"i32\":1}");
  cr_assert_eq(m->i32, 1);
  perfc_json_opts o = {.reject_unknown_fields = true};
  cr_assert_str_eq(fail_opts("{\"i32\":1,\"nope\":2}", PERFC_EPARSE, &o),
                   "json: nope: gw.v1.All has no field \"nope\"");
  cr_assert_str_eq(fail_opts("{\"inner\":{\"zz\":1}}", PERFC_EPARSE, &o),
                   "json: inner.zz: gw.v1.Inner has no field \"zz\"");
}

Test(gateway_json, malformed_documents) {
  const char *e = fail("{\"i32\":1,}");
  cr_assert(strncmp(e, "json: malformed at byte", 23) == 0, "%s", e);
  fail("{\"i32\":1} x");
  fail("");
  fail("[1]"); /* not an object */
  cr_assert_str_eq(fail("\"x\""), "json: expected an object (gw.v1.All), got a string");
}

Test(gateway_json, depth_is_bounded) {
  char buf[2048];
  size_t n = 0;
  n += (size_t)snprintf(buf, sizeof buf, "{\"val\":");
  for (int i = 0; i < 150; i++)
    buf[n++] = '[';
  for (int i = 0; i < 150; i++)
    buf[n++] = ']';
  buf[n++] = '}';
  buf[n] = '\0';
  cr_assert_str_eq(fail_opts(buf, PERFC_ETOOBIG, NULL),
                   "json: nested deeper than 100 objects and arrays");
  /* A message chain deeper than the bound, through fields. */
  n = 0;
  for (int i = 0; i < 60; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"child\":");
  n += (size_t)snprintf(buf + n, sizeof buf - n, "{}");
  for (int i = 0; i < 60; i++)
    buf[n++] = '}';
  buf[n] = '\0';
  ProtobufCMessage *m;
  perfc_json_opts o = {.max_depth = 50};
  cr_assert_eq(perfc_json_decode(&gw__v1__inner__descriptor, buf, n, &o, arena, &m),
               PERFC_ETOOBIG);
  o.max_depth = 70;
  cr_assert_eq(perfc_json_decode(&gw__v1__inner__descriptor, buf, n, &o, arena, &m), 0);
  o.max_depth = PERFC_JSON_MAX_DEPTH_LIMIT + 1;
  cr_assert_eq(perfc_json_decode(&gw__v1__inner__descriptor, "{}", 2, &o, arena, &m),
               PERFC_EINVAL);
}

Test(gateway_json, emit_unpopulated) {
  perfc_json_opts o = {.emit_unpopulated = true};
  Gw__V1__Inner in = GW__V1__INNER__INIT;
  cr_assert_str_eq(enc_opts(&in, &o), "{\"n\":0,\"s\":\"\",\"child\":null}");
}

/* Everything set, through JSON and back: the binary encodings agree. */
Test(gateway_json, round_trip_equals_binary) {
  perfc_json_opts o = {.resolve_type = resolve_gw};
  const char *in =
      "{\"i32\":-1,\"i64\":\"-2\",\"u32\":3,\"u64\":\"4\",\"s32\":-5,\"s64\":"
      "\"-6\",\"f32\":7,\"f64\":\"8\",\"sf32\":-9,\"sf64\":\"-10\",\"fl\":1.25,"
      "\"db\":-2.5,\"b\":true,\"str\":\"s\",\"by\":\"AA==\",\"color\":\"RED\","
      "\"inner\":{\"n\":1,\"child\":{\"s\":\"c\"}},\"rI32\":[1,2],\"rStr\":"
      "[\"x\",\"y\"],\"rInner\":[{\"n\":2}],\"rColor\":[\"GREEN\"],\"mStrInt\":"
      "{\"k\":1},\"mIntStr\":{\"2\":\"v\"},\"mBoolInner\":{\"false\":{}},"
      "\"oStr\":\"o\",\"ts\":\"2000-01-01T00:00:00Z\",\"dur\":\"0.5s\",\"mask\":"
      "\"a,bC\",\"wI64\":\"1\",\"wStr\":\"w\",\"wBool\":true,\"wDbl\":2,"
      "\"wBytes\":\"AQ==\",\"wU32\":3,\"st\":{\"x\":[1]},\"val\":{\"y\":true},"
      "\"lv\":[null],\"empty\":{},\"any\":{\"@type\":\"type.googleapis.com/"
      "gw.v1.Inner\",\"n\":5},\"plainI32\":11,\"snakeCaseName\":\"z\","
      "\"rVal\":[1],\"mVal\":{\"q\":\"r\"}}";
  Gw__V1__All *a = dec_opts(in, &o);
  const char *out = enc_opts(a, &o);
  Gw__V1__All *b = dec_opts(out, &o);
  cr_assert_str_eq(enc_opts(b, &o), out);
  size_t la = gw__v1__all__get_packed_size(a), lb = gw__v1__all__get_packed_size(b);
  cr_assert_eq(la, lb);
  uint8_t *pa = perfc_arena_alloc(arena, la), *pb = perfc_arena_alloc(arena, lb);
  gw__v1__all__pack(a, pa);
  gw__v1__all__pack(b, pb);
  cr_assert_eq(memcmp(pa, pb, la), 0);
  /* And protobuf-c reads the binary form of the JSON-built message. */
  Gw__V1__All *u = gw__v1__all__unpack(NULL, la, pa);
  cr_assert_not_null(u);
  cr_assert_eq(u->sf64, -10);
  cr_assert_eq(u->n_m_int_str, 1);
  gw__v1__all__free_unpacked(u, NULL);
}

/* All memory comes from the arena: decoding grows it, and freeing the
 * arena frees everything (valgrind's leak check over this suite). */
Test(gateway_json, allocates_from_the_arena) {
  size_t before = perfc_arena_used(arena);
  dec("{\"rStr\":[\"a\",\"b\"],\"st\":{\"k\":[1,2,3]}}");
  cr_assert_gt(perfc_arena_used(arena), before);
}

/* ---- perfc_http_codec.encode_bytes: the per-thread JSON memo ---------------
 * (json_memo.c) A cache hit's stored bytes are answered as JSON from the
 * thread's memo when the same gateway answered the same bytes on the same
 * route lately; every answer must still be exactly what encoding the
 * unpacked message gives. */

/* The route of Gw's method `name` (the first binding). */
static const perfc_http_route *route_of(const char *name) {
  const perfc_service_desc *svc = &gw__v1__gw__perfc_desc;
  for (size_t i = 0; i < svc->n_http_routes; i++)
    if (strcmp(svc->methods[svc->http_routes[i].method_index].name, name) == 0)
      return &svc->http_routes[i];
  cr_assert_fail("no route for %s", name);
  return NULL;
}

/* ListResp{items: [{n: k, s: text}], next: next} packed into the arena. */
static uint8_t *list_bytes(int k, const char *text, const char *next,
                           size_t *n) {
  Gw__V1__Inner it = GW__V1__INNER__INIT;
  it.n = k;
  it.s = (char *)text;
  Gw__V1__Inner *items[1] = {&it};
  Gw__V1__ListResp l = GW__V1__LIST_RESP__INIT;
  l.n_items = 1;
  l.items = items;
  l.next = (char *)next;
  *n = gw__v1__list_resp__get_packed_size(&l);
  uint8_t *b = perfc_arena_alloc(arena, *n ? *n : 1);
  gw__v1__list_resp__pack(&l, b);
  return b;
}

/* What encoding the unpacked message on route `m` gives: the reference. */
static const char *direct(const perfc_gateway_match *m, const uint8_t *b,
                          size_t n, const perfc_json_opts *o) {
  ProtobufCAllocator al = perfc_arena_allocator(arena);
  ProtobufCMessage *msg =
      protobuf_c_message_unpack(&gw__v1__list_resp__descriptor, &al, n, b);
  cr_assert_not_null(msg);
  char *out = NULL;
  size_t len = 0;
  cr_assert_eq(perfc_gateway_encode_response(m, msg, o, arena, &out, &len), 0);
  return out;
}

static const char *via_memo(uint64_t gen, const perfc_gateway_match *m,
                            const uint8_t *b, size_t n,
                            const perfc_json_opts *o) {
  char *out = NULL;
  size_t len = 0;
  int rc = perfc__gateway_encode_bytes(o, gen, m, &gw__v1__list_resp__descriptor,
                                       b, n, arena, &out, &len);
  cr_assert_eq(rc, 0, "encode_bytes: %d %s", rc, perfc_last_error());
  cr_assert_eq(strlen(out), len);
  return out;
}

Test(gateway_json, encode_bytes_memo_keyed_by_gateway_route_and_bytes) {
  perfc_json_opts o = {.resolve_type = resolve_gw};
  perfc_gateway_match list = {.route = route_of("List")};
  perfc_gateway_match batch = {.route = route_of("BatchGet")};
  uint64_t gen = perfc__gateway_memo_gen(), gen2 = perfc__gateway_memo_gen();
  cr_assert_neq(gen, 0);
  cr_assert_neq(gen, gen2);
  size_t n;
  uint8_t *b = list_bytes(7, "seven", "p2", &n);
  const char *want_list = direct(&list, b, n, &o);
  const char *want_batch = direct(&batch, b, n, &o);
  /* response_body "items": the array alone; without it, the message. */
  cr_assert_str_eq(want_list, "[{\"n\":7,\"s\":\"seven\"}]");
  cr_assert_str_eq(want_batch,
                   "{\"items\":[{\"n\":7,\"s\":\"seven\"}],\"next\":\"p2\"}");
  uint64_t h0, m0, h1, m1;
  perfc__gateway_memo_stats(&h0, &m0);
  for (int i = 0; i < 3; i++)
    cr_assert_str_eq(via_memo(gen, &list, b, n, &o), want_list);
  perfc__gateway_memo_stats(&h1, &m1);
  cr_assert_eq(h1 - h0, 2, "hits %llu", (unsigned long long)(h1 - h0));
  cr_assert_eq(m1 - m0, 1);
  /* Same bytes, another route, another gateway: not the list's answer. */
  cr_assert_str_eq(via_memo(gen, &batch, b, n, &o), want_batch);
  cr_assert_str_eq(via_memo(gen2, &list, b, n, &o), want_list);
  perfc__gateway_memo_stats(&h0, &m0);
  cr_assert_eq(m0 - m1, 2);
  /* Other bytes of the same length (one letter changed) are another
   * answer, whatever their hash does. */
  size_t n2;
  uint8_t *b2 = list_bytes(7, "sevem", "p2", &n2);
  cr_assert_eq(n2, n);
  cr_assert_str_eq(via_memo(gen, &list, b2, n2, &o),
                   "[{\"n\":7,\"s\":\"sevem\"}]");
  /* 300 values twice each, more than the memo's slots: every answer is
   * the direct encoding's. The second round goes backwards, so the values
   * written last are asked first and at least those hit (which ones share
   * a slot depends on the hash, and the route's address is part of it). */
  perfc__gateway_memo_stats(&h0, &m0);
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 300; i++) {
      int k = round == 0 ? i : 299 - i;
      char s[16];
      snprintf(s, sizeof s, "v%d", k);
      size_t nk;
      uint8_t *bk = list_bytes(k, s, "", &nk);
      cr_assert_str_eq(via_memo(gen, &batch, bk, nk, &o),
                       direct(&batch, bk, nk, &o), "k=%d", k);
    }
  perfc__gateway_memo_stats(&h1, &m1);
  cr_assert_eq((h1 - h0) + (m1 - m0), 600);
  cr_assert_gt(h1 - h0, 0);
  /* Bytes over the memo's bound are answered, never remembered. */
  char big[1500];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  size_t nb;
  uint8_t *bb = list_bytes(1, big, "", &nb);
  perfc__gateway_memo_stats(&h0, &m0);
  for (int i = 0; i < 2; i++)
    cr_assert_str_eq(via_memo(gen, &batch, bb, nb, &o), direct(&batch, bb, nb, &o));
  perfc__gateway_memo_stats(&h1, &m1);
  cr_assert_eq(h1, h0);
  /* An empty message is no bytes at all (NULL, 0): remembered too. */
  perfc__gateway_memo_stats(&h0, &m0);
  for (int i = 0; i < 2; i++)
    cr_assert_str_eq(via_memo(gen, &batch, NULL, 0, &o), "{}");
  perfc__gateway_memo_stats(&h1, &m1);
  cr_assert_eq(h1 - h0, 1);
  /* Bytes that do not decode: PERFC_EPARSE, nothing remembered. */
  static const uint8_t bad[] = {0x0a, 0x05, 0x08};
  char *out = NULL;
  size_t len = 0;
  cr_assert_eq(perfc__gateway_encode_bytes(&o, gen, &list,
                                           &gw__v1__list_resp__descriptor, bad,
                                           sizeof bad, arena, &out, &len),
               PERFC_EPARSE);
}
