/*
 * test_names.c — protoc-gen-perfc/names.c: protoc-c's mangling rules.
 *
 * Room: tests/generator. The expected strings were taken from protoc-c
 * 1.4.1's own output for the same names, so a mismatch here means generated
 * perfc code would refer to identifiers protoc-c never emitted.
 */
#include "names.h"

#include <criterion/criterion.h>
#include <stdlib.h>

typedef char *(*name_fn)(const char *);

static void expect(name_fn fn, const char *in, const char *want) {
  char *got = fn(in);
  cr_expect_str_eq(got, want, "%s -> %s, want %s", in, got, want);
  free(got);
}

Test(names, camel_to_lower) {
  expect(perfc__camel_to_lower, "GetUser", "get_user");
  expect(perfc__camel_to_lower, "GetHTTPUser", "get_httpuser");
  expect(perfc__camel_to_lower, "get_v2_Value", "get_v2__value");
  expect(perfc__camel_to_lower, "A1b2C3", "a1b2_c3");
  expect(perfc__camel_to_lower, "HTTPRequest2Go", "httprequest2_go");
  expect(perfc__camel_to_lower, "My_Svc2", "my__svc2");
  expect(perfc__camel_to_lower, "getValue", "get_value");
  expect(perfc__camel_to_lower, "_x", "_x");
  expect(perfc__camel_to_lower, "", "");
}

Test(names, camel_to_upper) {
  expect(perfc__camel_to_upper, "GetUser", "GET_USER");
  expect(perfc__camel_to_upper, "HTTPRequest2Go", "HTTPREQUEST2_GO");
  expect(perfc__camel_to_upper, "in_ner", "IN_NER");
  expect(perfc__camel_to_upper, "DoHTTP2Thing", "DO_HTTP2_THING");
}

Test(names, to_camel) {
  expect(perfc__to_camel, "in_ner", "InNer");
  expect(perfc__to_camel, "fooBar", "FooBar");
  expect(perfc__to_camel, "b_c", "BC");
  expect(perfc__to_camel, "My_Svc2", "MySvc2");
  expect(perfc__to_camel, "v2", "V2");
}

Test(names, full_names) {
  expect(perfc__full_name_to_lower, "a.b_c.V2x.fooBar.HTTPRequest2Go.in_ner",
         "a__b_c__v2x__foo_bar__httprequest2_go__in_ner");
  expect(perfc__full_name_to_upper, "a.b_c.V2x.fooBar.HTTPRequest2Go.in_ner",
         "A__B_C__V2X__FOO_BAR__HTTPREQUEST2_GO__IN_NER");
  expect(perfc__full_name_to_c, "a.b_c.V2x.fooBar.HTTPRequest2Go.in_ner",
         "A__BC__V2x__FooBar__HTTPRequest2Go__InNer");
  expect(perfc__full_name_to_lower, ".a.b.Svc", "a__b__svc");
  expect(perfc__full_name_to_c, "a.b.Svc", "A__B__Svc");
  expect(perfc__full_name_to_lower, "Svc", "svc");
  expect(perfc__full_name_to_c, "a.b.c.v2.Second_Svc2",
         "A__B__C__V2__SecondSvc2");
  expect(perfc__full_name_to_lower, "a.b.c.v2.Second_Svc2",
         "a__b__c__v2__second__svc2");
  expect(perfc__full_name_to_lower, "", "");
}

Test(names, keywords) {
  cr_expect(perfc__is_c_keyword("int"));
  cr_expect(perfc__is_c_keyword("do"));
  cr_expect(perfc__is_c_keyword("union"));
  cr_expect(perfc__is_c_keyword("_Bool"));
  cr_expect(!perfc__is_c_keyword("get_user"));
  cr_expect(!perfc__is_c_keyword("Int"));
  cr_expect(!perfc__is_c_keyword("bool"));
}
