/* fuzz_route.c — the gateway's route matcher and request binder
 * (runtime/src/gateway/route.c, bind.c) on arbitrary request lines against
 * gw.proto's generated route table (every HttpRule form). A match must
 * name a route of the table whose HTTP method is the request's or "*", and
 * one variable value per route variable; binding may fail, never crash.
 *
 * Input: "METHOD TARGET\nBODY" (without a space the whole input is the
 * target of a GET).
 *
 * Room: tests/fuzz. */
#include "perfc/gateway.h"

#include "gw.pb-c.h"
#include "gw.perfc.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static perfc_gateway_router *router;
  if (!router && (perfc_gateway_router_new(&router) != 0 ||
                  perfc_gateway_router_add(router, &gw__v1__gw__perfc_desc) != 0))
    abort();
  perfc_arena *a;
  if (perfc_arena_new(&a, 0) != 0)
    abort();
  char *in = perfc_arena_strndup(a, (const char *)data, size);
  const char *method = "GET", *target = in, *body = NULL;
  size_t target_len = size, body_len = 0;
  char *sp = memchr(in, ' ', size);
  if (sp) {
    *sp = '\0';
    method = in;
    target = sp + 1;
    char *nl = memchr(target, '\n', size - (size_t)(target - in));
    target_len = nl ? (size_t)(nl - target) : size - (size_t)(target - in);
    if (nl) {
      body = nl + 1;
      body_len = size - (size_t)(body - in);
    }
  }
  perfc_gateway_match m;
  bool elsewhere;
  if (perfc_gateway_match_route(router, method, target, target_len, a, &m,
                                &elsewhere) == 0) {
    const perfc_service_desc *s = &gw__v1__gw__perfc_desc;
    if (m.route < s->http_routes || m.route >= s->http_routes + s->n_http_routes)
      abort();
    if (strcmp(m.route->http_method, "*") != 0 &&
        strcmp(m.route->http_method, method) != 0)
      abort();
    for (size_t i = 0; i < m.route->n_vars; i++)
      if (!m.var_values[i] || strlen(m.var_values[i]) != m.var_lens[i])
        abort();
    ProtobufCMessage *req;
    perfc_json_opts o = {.reject_unknown_fields = size & 1};
    if (perfc_gateway_build_request(&m, body, body_len, &o, a, &req) == 0) {
      size_t n = protobuf_c_message_get_packed_size(req);
      uint8_t *buf = perfc_arena_alloc(a, n + 1);
      if (!buf || protobuf_c_message_pack(req, buf) != n)
        abort();
    }
  }
  perfc_arena_free(a);
  return 0;
}
