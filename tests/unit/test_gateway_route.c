/*
 * test_gateway_route.c — the route matcher (runtime/src/gateway/route.c)
 * over gw.proto's generated route table, request binding (bind.c: body,
 * path variables, query parameters), response_body, and the status
 * mapping (status.c).
 */
#include "perfc/gateway.h"

#include "gw.pb-c.h"
#include "gw.perfc.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static perfc_arena *arena;
static perfc_gateway_router *router;

static void setup(void) {
  cr_assert_eq(perfc_arena_new(&arena, 0), 0);
  cr_assert_eq(perfc_gateway_router_new(&router), 0);
  cr_assert_eq(perfc_gateway_router_add(router, &gw__v1__gw__perfc_desc), 0,
               "%s", perfc_last_error());
}

static void teardown(void) {
  perfc_gateway_router_free(router);
  perfc_arena_free(arena);
}

TestSuite(gateway_route, .init = setup, .fini = teardown);

static perfc_gateway_match match(const char *method, const char *target) {
  perfc_gateway_match m;
  int rc = perfc_gateway_match_route(router, method, target, strlen(target),
                                     arena, &m, NULL);
  cr_assert_eq(rc, 0, "%s %s: %d %s", method, target, rc, perfc_last_error());
  return m;
}

static int no_match(const char *method, const char *target, bool *elsewhere) {
  perfc_gateway_match m;
  return perfc_gateway_match_route(router, method, target, strlen(target),
                                   arena, &m, elsewhere);
}

Test(gateway_route, the_table_is_generated) {
  cr_assert_eq(gw__v1__gw__perfc_desc.n_http_routes, 14);
  const perfc_http_route *r = &gw__v1__gw__perfc_desc.http_routes[0];
  cr_assert_str_eq(r->http_method, "GET");
  cr_assert_str_eq(r->pattern, "/v1/shelves/{shelf}/items/{id}");
  cr_assert_eq(r->n_segments, 5);
  cr_assert_eq(r->segments[2].kind, PERFC_HTTP_SEG_ANY);
  cr_assert_str_eq(r->segments[3].literal, "items");
  cr_assert_eq(r->n_vars, 2);
  cr_assert_eq(r->vars[1].first, 4);
  cr_assert_eq(r->vars[1].last, 5);
  cr_assert_eq(r->vars[1].field.numbers[0], 2);
}

Test(gateway_route, variables_and_additional_bindings) {
  perfc_gateway_match m = match("GET", "/v1/shelves/a/items/7");
  cr_assert_str_eq(m.method->name, "Get");
  cr_assert_eq(m.route->binding_index, 0);
  cr_assert_str_eq(m.var_values[0], "a");
  cr_assert_str_eq(m.var_values[1], "7");
  m = match("GET", "/v1/items/8");
  cr_assert_str_eq(m.method->name, "Get");
  cr_assert_eq(m.route->binding_index, 1);
  cr_assert_str_eq(m.var_values[0], "8");
}

Test(gateway_route, literal_beats_variable) {
  perfc_gateway_match m = match("GET", "/v1/shelves/special/items/7");
  cr_assert_str_eq(m.method->name, "GetLiteral");
  m = match("GET", "/v1/shelves/specia1/items/7");
  cr_assert_str_eq(m.method->name, "Get");
}

Test(gateway_route, verbs) {
  cr_assert_str_eq(match("POST", "/v1/items:batchGet").method->name, "BatchGet");
  cr_assert_str_eq(match("POST", "/v1/items").method->name, "Create");
  /* A verb the route does not have is part of the segment. */
  cr_assert_eq(no_match("POST", "/v1/items:other", NULL), PERFC_ENOENT);
  /* GET /v1/items/{id} with an id holding ':' (no route has that verb). */
  perfc_gateway_match m = match("GET", "/v1/items/a:b");
  cr_assert_str_eq(m.var_values[0], "a:b");
  m = match("GET", "/files/a/b/c.txt:download");
  cr_assert_str_eq(m.method->name, "Files");
  cr_assert_str_eq(m.var_values[0], "a/b/c.txt");
}

Test(gateway_route, multi_segment_variables_keep_encoded_slash) {
  perfc_gateway_match m = match("GET", "/v2/shelves/s%201/items/i%2F2");
  cr_assert_str_eq(m.method->name, "ByName");
  cr_assert_str_eq(m.var_values[0], "shelves/s 1/items/i%2F2");
  /* Two segments where the template wants four: no match. */
  cr_assert_eq(no_match("GET", "/v2/shelves/s1", NULL), PERFC_ENOENT);
}

Test(gateway_route, single_segment_variables_fully_decoded) {
  perfc_gateway_match m = match("GET", "/v1/shelves/a%2Fb%20c%C3%A9/items/7");
  cr_assert_str_eq(m.var_values[0], "a/b c\xc3\xa9");
  cr_assert_eq(no_match("GET", "/v1/shelves/a%zz/items/7", NULL), PERFC_EPARSE);
  cr_assert_eq(no_match("GET", "/v1/shelves/a%2/items/7", NULL), PERFC_EPARSE);
  cr_assert_eq(no_match("GET", "/v1/shelves/a%00/items/7", NULL), PERFC_EPARSE);
  /* Literals compare with the decoded segment. */
  cr_assert_str_eq(match("GET", "/%761/items/3").method->name, "Get");
}

Test(gateway_route, double_star_and_any_method) {
  perfc_gateway_match m = match("DELETE", "/static/css/site.css");
  cr_assert_str_eq(m.method->name, "Catch");
  cr_assert_str_eq(match("OPTIONS", "/static").method->name, "Catch");
  cr_assert_str_eq(match("HEAD", "/v1/ping").method->name, "Head");
  m = match("GET", "/v3/abc/x/n1");
  cr_assert_str_eq(m.method->name, "Wild");
  cr_assert_str_eq(m.var_values[0], "n1");
  /* `*` does not match an empty segment. */
  cr_assert_eq(no_match("GET", "/v3//x/n1", NULL), PERFC_ENOENT);
}

Test(gateway_route, not_found_and_method_not_allowed) {
  bool elsewhere = true;
  cr_assert_eq(no_match("GET", "/nope", &elsewhere), PERFC_ENOENT);
  cr_assert_not(elsewhere);
  cr_assert_str_eq(perfc_last_error(), "gateway: no route for GET /nope");
  cr_assert_eq(no_match("PUT", "/v1/shelves/a/items/7", &elsewhere), PERFC_ENOENT);
  cr_assert(elsewhere);
  cr_assert_eq(no_match("GET", "/v1/items/", &elsewhere), PERFC_ENOENT);
  cr_assert_eq(no_match("GET", "v1/items/1", NULL), PERFC_ENOENT);
}

Test(gateway_route, a_conflicting_service_is_refused) {
  cr_assert_eq(perfc_gateway_router_add(router, &gw__v1__gw__perfc_desc),
               PERFC_EEXIST);
  cr_assert_str_eq(perfc_last_error(),
                   "gateway: route GET /v1/shelves/{shelf}/items/{id} of "
                   "gw.v1.Gw/Get matches the same requests as GET "
                   "/v1/shelves/{shelf}/items/{id} of gw.v1.Gw/Get");
}

static ProtobufCMessage *build(const char *method, const char *target,
                               const char *body, const perfc_json_opts *o) {
  perfc_gateway_match m = match(method, target);
  ProtobufCMessage *msg = NULL;
  int rc = perfc_gateway_build_request(&m, body, body ? strlen(body) : 0, o,
                                       arena, &msg);
  cr_assert_eq(rc, 0, "%s %s: %s", method, target, perfc_last_error());
  return msg;
}

static const char *build_fails(const char *method, const char *target,
                               const char *body, const perfc_json_opts *o) {
  perfc_gateway_match m = match(method, target);
  ProtobufCMessage *msg = NULL;
  int rc = perfc_gateway_build_request(&m, body, body ? strlen(body) : 0, o,
                                       arena, &msg);
  cr_assert_eq(rc, PERFC_EPARSE, "%s %s: %d", method, target, rc);
  return perfc_last_error();
}

Test(gateway_route, path_and_query_bind_the_request) {
  Gw__V1__GetReq *r = (Gw__V1__GetReq *)build(
      "GET",
      "/v1/shelves/s%20h/items/-7?tags=a&tags=b%2Bc&filter.n=3&filter.s=x+y"
      "&full=true&color=GREEN&since=2024-01-01T00:00:00Z&limit=5&unknown=1",
      NULL, NULL);
  cr_assert_str_eq(r->shelf, "s h");
  cr_assert_eq(r->id, -7);
  cr_assert_eq(r->n_tags, 2);
  cr_assert_str_eq(r->tags[1], "b+c");
  cr_assert_eq(r->filter->n, 3);
  cr_assert_str_eq(r->filter->s, "x y");
  cr_assert_eq(r->full, 1);
  cr_assert_eq(r->color, GW__V1__COLOR__GREEN);
  cr_assert_eq(r->since->seconds, 1704067200);
  cr_assert_eq(r->limit->value, 5);
  /* JSON names work too; enums by number. */
  r = (Gw__V1__GetReq *)build("GET", "/v1/items/1?color=1&filter.n=-2", NULL, NULL);
  cr_assert_eq(r->color, GW__V1__COLOR__RED);
  cr_assert_eq(r->filter->n, -2);
}

Test(gateway_route, query_errors_name_the_parameter) {
  cr_assert_str_eq(build_fails("GET", "/v1/items/1?filter.n=abc", NULL, NULL),
                   "query parameter \"filter.n\": \"abc\" is not an integer");
  cr_assert_str_eq(build_fails("GET", "/v1/items/1?id=2", NULL, NULL),
                   "query parameter \"id\": field id is bound by the path; it "
                   "cannot be a query parameter too");
  cr_assert_str_eq(build_fails("GET", "/v1/items/1?filter=x", NULL, NULL),
                   "query parameter \"filter\": field filter is a message; "
                   "query parameters set primitive fields (and Timestamp, "
                   "Duration, FieldMask, wrappers), nested ones with '.'");
  cr_assert_str_eq(build_fails("GET", "/v1/items/1?full=yes", NULL, NULL),
                   "query parameter \"full\": \"yes\" is not true or false");
  cr_assert_str_eq(build_fails("GET", "/v1/items/1?shelf=%ff", NULL, NULL),
                   "query parameter \"shelf\": the value is not valid UTF-8");
  cr_assert_str_eq(build_fails("GET", "/v1/items/1?shelf=%zz", NULL, NULL),
                   "query parameter \"shelf=%zz\": malformed %-escape or an "
                   "encoded NUL");
  perfc_json_opts o = {.reject_unknown_fields = true};
  cr_assert_str_eq(build_fails("GET", "/v1/items/1?zz=1", NULL, &o),
                   "query parameter \"zz\": gw.v1.GetReq has no field \"zz\"");
  cr_assert_str_eq(build_fails("GET", "/v1/items/x", NULL, NULL),
                   "path variable {id}: \"x\" is not an integer");
}

Test(gateway_route, body_star_and_body_field) {
  Gw__V1__All *a = (Gw__V1__All *)build(
      "POST", "/v1/items", "{\"str\":\"x\",\"rI32\":[1,2]}", NULL);
  cr_assert_str_eq(a->str, "x");
  cr_assert_eq(a->n_r_i32, 2);
  /* body: "item" with the path variable item.i64: the path wins. */
  Gw__V1__UpdateReq *u = (Gw__V1__UpdateReq *)build(
      "PATCH", "/v1/items/42?updateMask=str", "{\"str\":\"y\",\"i64\":\"1\"}", NULL);
  cr_assert_str_eq(u->item->str, "y");
  cr_assert_eq(u->item->i64, 42);
  cr_assert_eq(u->update_mask->n_paths, 1);
  cr_assert_str_eq(u->update_mask->paths[0], "str");
  /* body "*" on the PUT binding: the mask comes from the body. */
  u = (Gw__V1__UpdateReq *)build("PUT", "/v1/items/5",
                                 "{\"item\":{\"b\":true},\"updateMask\":\"b\"}", NULL);
  cr_assert_eq(u->item->i64, 5);
  cr_assert_eq(u->item->b, 1);
  cr_assert_str_eq(build_fails("PATCH", "/v1/items/42", "{\"str\":1}", NULL),
                   "json: item.str: expected a string, got a number");
  cr_assert_str_eq(build_fails("GET", "/v1/items/1", "{\"x\":1}", NULL),
                   "GET /v1/items/{id} takes no request body; send the "
                   "fields as query parameters");
  cr_assert_str_eq(build_fails("PUT", "/v1/items/5?updateMask=x", "{}", NULL),
                   "query parameter \"updateMask\": field update_mask is bound "
                   "by the body (body: \"*\"); it cannot be a query parameter "
                   "too");
  /* An empty body is no body. */
  a = (Gw__V1__All *)build("POST", "/v1/items", " \n", NULL);
  cr_assert_eq(a->i32, 0);
}

/* PATCH with body: "item" and no update_mask: the mask is the body's
 * members (grpc-gateway's rule), proto names relative to the body field;
 * nested objects of plain messages recurse, well-known types and maps are
 * leaves, unknown members and the path-bound item.i64 are left out. */
Test(gateway_route, patch_without_mask_takes_the_body_fields) {
  Gw__V1__UpdateReq *u = (Gw__V1__UpdateReq *)build(
      "PATCH", "/v1/items/42",
      "{\"str\":\"y\",\"i64\":\"1\",\"b\":false,\"nope\":1,"
      "\"inner\":{\"n\":3},\"ts\":\"2024-01-01T00:00:00Z\","
      "\"mStrInt\":{\"a\":1},\"snake_case_name\":\"s\"}",
      NULL);
  cr_assert_eq(u->item->i64, 42);
  cr_assert_not_null(u->update_mask);
  const char *want[] = {"str", "b", "inner.n", "ts", "m_str_int",
                        "snake_case_name"};
  cr_assert_eq(u->update_mask->n_paths, 6);
  for (size_t i = 0; i < 6; i++)
    cr_assert_str_eq(u->update_mask->paths[i], want[i]);
  /* A mask the client sent stands. */
  u = (Gw__V1__UpdateReq *)build("PATCH", "/v1/items/42?updateMask=b",
                                 "{\"str\":\"y\"}", NULL);
  cr_assert_eq(u->update_mask->n_paths, 1);
  cr_assert_str_eq(u->update_mask->paths[0], "b");
  /* No member, no mask; not for PUT (body "*"), nor without a body. */
  u = (Gw__V1__UpdateReq *)build("PATCH", "/v1/items/42", "{}", NULL);
  cr_assert_null(u->update_mask);
  u = (Gw__V1__UpdateReq *)build("PATCH", "/v1/items/42", "{\"i64\":\"7\"}",
                                 NULL);
  cr_assert_null(u->update_mask);
  u = (Gw__V1__UpdateReq *)build("PUT", "/v1/items/5", "{\"item\":{\"b\":true}}",
                                 NULL);
  cr_assert_null(u->update_mask);
  u = (Gw__V1__UpdateReq *)build("PATCH", "/v1/items/42", NULL, NULL);
  cr_assert_null(u->update_mask);
  /* An empty object and a repeated field are one path each. */
  u = (Gw__V1__UpdateReq *)build("PATCH", "/v1/items/42",
                                 "{\"inner\":{},\"rInner\":[{\"n\":1}]}", NULL);
  cr_assert_eq(u->update_mask->n_paths, 2);
  cr_assert_str_eq(u->update_mask->paths[0], "inner");
  cr_assert_str_eq(u->update_mask->paths[1], "r_inner");
  /* At most 256 paths: 256 members pass, 257 are refused (400). */
  char body[257 * 12 + 8];
  for (int n = 256; n <= 257; n++) {
    size_t o = 0;
    body[o++] = '{';
    for (int i = 0; i < n; i++)
      o += (size_t)snprintf(body + o, sizeof body - o, "%s\"b\":true",
                            i ? "," : "");
    body[o++] = '}';
    body[o] = '\0';
    perfc_gateway_match m = match("PATCH", "/v1/items/42");
    ProtobufCMessage *msg = NULL;
    int rc = perfc_gateway_build_request(&m, body, o, NULL, arena, &msg);
    if (n == 256) {
      cr_assert_eq(rc, 0, "%s", perfc_last_error());
      cr_assert_eq(((Gw__V1__UpdateReq *)msg)->update_mask->n_paths, 256);
    } else {
      cr_assert_eq(rc, PERFC_ETOOBIG);
      cr_assert_str_eq(perfc_last_error(),
                       "json: more than 256 fields for the update mask");
    }
  }
}

Test(gateway_route, response_body_and_whole_response) {
  perfc_gateway_match m = match("GET", "/v1/items?next=x");
  Gw__V1__Inner i1 = GW__V1__INNER__INIT, i2 = GW__V1__INNER__INIT;
  i1.n = 1;
  i2.s = "b";
  Gw__V1__Inner *items[] = {&i1, &i2};
  Gw__V1__ListResp resp = GW__V1__LIST_RESP__INIT;
  resp.n_items = 2;
  resp.items = items;
  resp.next = "t";
  char *out;
  size_t len;
  cr_assert_eq(perfc_gateway_encode_response(&m, &resp.base, NULL, arena, &out, &len), 0);
  cr_assert_str_eq(out, "[{\"n\":1},{\"s\":\"b\"}]");
  m = match("POST", "/v1/items:batchGet");
  cr_assert_eq(perfc_gateway_encode_response(&m, &resp.base, NULL, arena, &out, &len), 0);
  cr_assert_str_eq(out, "{\"items\":[{\"n\":1},{\"s\":\"b\"}],\"next\":\"t\"}");
}

Test(gateway_route, any_resolves_through_the_router) {
  cr_assert_eq(perfc_gateway_router_resolve("gw.v1.Inner", router),
               &gw__v1__inner__descriptor);
  cr_assert_eq(perfc_gateway_router_resolve("gw.v1.UpdateReq", router),
               &gw__v1__update_req__descriptor);
  cr_assert_null(perfc_gateway_router_resolve("x.Y", router));
}

Test(gateway_route, grpc_status_to_http) {
  static const struct {
    perfc_status_code code;
    int http;
  } table[] = {
      {PERFC_STATUS_OK, 200},
      {PERFC_STATUS_CANCELLED, 499},
      {PERFC_STATUS_UNKNOWN, 500},
      {PERFC_STATUS_INVALID_ARGUMENT, 400},
      {PERFC_STATUS_DEADLINE_EXCEEDED, 504},
      {PERFC_STATUS_NOT_FOUND, 404},
      {PERFC_STATUS_ALREADY_EXISTS, 409},
      {PERFC_STATUS_PERMISSION_DENIED, 403},
      {PERFC_STATUS_RESOURCE_EXHAUSTED, 429},
      {PERFC_STATUS_FAILED_PRECONDITION, 400},
      {PERFC_STATUS_ABORTED, 409},
      {PERFC_STATUS_OUT_OF_RANGE, 400},
      {PERFC_STATUS_UNIMPLEMENTED, 501},
      {PERFC_STATUS_INTERNAL, 500},
      {PERFC_STATUS_UNAVAILABLE, 503},
      {PERFC_STATUS_DATA_LOSS, 500},
      {PERFC_STATUS_UNAUTHENTICATED, 401},
      {(perfc_status_code)99, 500},
  };
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    cr_assert_eq(perfc_http_status_from_grpc(table[i].code), table[i].http,
                 "code %d", (int)table[i].code);
}

Test(gateway_route, status_body_is_google_rpc_status) {
  char *out;
  size_t len;
  cr_assert_eq(perfc_gateway_status_json(PERFC_STATUS_NOT_FOUND,
                                         "user \"7\"\n\x01 not found", arena,
                                         &out, &len),
               0);
  cr_assert_str_eq(out, "{\"code\":5,\"message\":\"user \\\"7\\\"\\u000a\\u0001 "
                        "not found\",\"details\":[]}");
  cr_assert_eq(len, strlen(out));
  cr_assert_eq(perfc_gateway_status_json(PERFC_STATUS_INTERNAL, NULL, arena, &out, &len), 0);
  cr_assert_str_eq(out, "{\"code\":13,\"message\":\"\",\"details\":[]}");
}

/* #18 item 6: the compression and HTTP-cache options are checked at
 * attach, with a message naming them; the defaults are the named
 * constants. */
Test(gateway_attach, compression_and_cache_options_are_checked) {
  perfc_server_opts so; /* h2: the C core cannot carry HTTP/JSON */
  perfc_server_opts_init(&so);
  so.transport = PERFC_TRANSPORT_H2;
  perfc_gateway_opts go;
  perfc_gateway_opts_init(&go);
  cr_expect_eq(go.gzip_min_bytes, PERFC_DEFAULT_HTTP_GZIP_MIN_BYTES);
  cr_expect_eq(go.gzip_level, PERFC_DEFAULT_HTTP_GZIP_LEVEL);
  cr_expect_eq(go.http_cache, PERFC_HTTP_CACHE_REVALIDATE);
  static const struct {
    int level, mode;
  } bad[] = {{10, 0}, {-2, 0}, {0, 3}, {0, -1}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    perfc_server *srv;
    cr_assert_eq(perfc_server_new(&srv, &so), 0);
    perfc_gateway_opts_init(&go);
    go.gzip_level = bad[i].level;
    go.http_cache = (perfc_http_cache_mode)bad[i].mode;
    cr_expect_eq(perfc_gateway_attach(&go, srv), PERFC_EINVAL, "case %zu", i);
    cr_expect(strstr(perfc_last_error(), "gzip_level") != NULL, "%s",
              perfc_last_error());
    perfc_server_free(srv);
  }
  perfc_server *srv;
  cr_assert_eq(perfc_server_new(&srv, &so), 0);
  perfc_gateway_opts_init(&go);
  go.gzip_level = PERFC_HTTP_GZIP_OFF;
  go.http_cache = PERFC_HTTP_CACHE_OFF;
  cr_expect_eq(perfc_gateway_attach(&go, srv), 0, "%s", perfc_last_error());
  perfc_server_free(srv);
}
