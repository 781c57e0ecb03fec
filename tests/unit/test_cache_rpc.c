/* test_cache_rpc.c — runtime/src/data/cache_rpc.c: one cached unary call through
 * an L1-only cache on a real server: the load runs once per key, NOT_FOUND
 * is cached negatively, other errors are not cached, invalidation reloads.
 * (The check of stored bytes before a hit sends them: test_pb_wire.c. With
 * Redis, generated code and the bytes on the wire:
 * tests/integration/test_cached.c.) */
#include "empty_service.h"
#include "test_transport.h" /* test_server_new: both transports */

#include <criterion/criterion.h>
#include <perfc/cache_rpc.h>
#include <stdatomic.h>
#include <string.h>

static perfc_cache *cache;
static atomic_int loads;
static atomic_int answer; /* status the load returns */

/* The load's NOT_FOUND message, or NULL. Atomic: the test sets it between
 * calls while the server's threads read it, and TSan does not see the
 * ordering the calls' round trips give (the client is the C core). */
static _Atomic(const char *) not_found_msg;

static perfc_status_code load(perfc_ctx *ctx, const ProtobufCMessage *req,
                              ProtobufCMessage *resp, void *ud) {
  (void)req;
  (void)resp;
  (void)ud;
  atomic_fetch_add(&loads, 1);
  perfc_status_code st = (perfc_status_code)atomic_load(&answer);
  const char *m = atomic_load(&not_found_msg);
  if (st == PERFC_STATUS_NOT_FOUND && m != NULL)
    return perfc_ctx_error(ctx, st, "%s", m);
  return st;
}

static perfc_status_code cached_ping(perfc_ctx *ctx, void *ud) {
  (void)ud;
  const char *key = perfc_ctx_metadata_get(ctx, "x-key", NULL);
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  Google__Protobuf__Empty *resp = perfc_ctx_alloc(ctx, sizeof *resp);
  google__protobuf__empty__init(resp);
  if (perfc_ctx_metadata_get(ctx, "x-invalidate", NULL) != NULL) {
    perfc_cache_rpc_invalidate(ctx, cache, &key, 1);
    return PERFC_STATUS_OK;
  }
  return perfc_cache_rpc_unary(ctx, cache, key, 60000, 60000, &req.base,
                               &resp->base, load, NULL);
}

static const empty_handlers cached_impl = {cached_ping};

/* One call; its status message into `msg` (`cap` bytes) when not NULL. */
static perfc_status_code call_msg(perfc_channel *ch, const char *key,
                                  int invalidate, char *msg, size_t cap) {
  perfc_metadata md[] = {{"x-key", key, 0}, {"x-invalidate", "1", 0}};
  perfc_call_opts opts = {.metadata = md, .metadata_count = invalidate ? 2 : 1};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c =
      perfc_channel_unary(ch, &empty_methods[0], &req.base, &resp, &opts, &st);
  if (resp != NULL)
    protobuf_c_message_free_unpacked(resp, NULL);
  if (msg != NULL)
    snprintf(msg, cap, "%s", st.message ? st.message : "");
  perfc_status_reset(&st);
  return c;
}

static perfc_status_code call(perfc_channel *ch, const char *key, int invalidate) {
  return call_msg(ch, key, invalidate, NULL, 0);
}

Test(cache_rpc, load_once_negative_cached_errors_not_cached_invalidate_reloads) {
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = "rpc_test";
  cr_assert_eq(perfc_cache_new(&cache, &co), 0);
  perfc_server *srv;
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &cached_impl, NULL), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  perfc_channel *ch;
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);

  atomic_store(&answer, PERFC_STATUS_OK);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(call(ch, "k1", 0), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&loads), 1, "served from the cache after the first load");

  atomic_store(&answer, PERFC_STATUS_NOT_FOUND);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(call(ch, "k2", 0), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(atomic_load(&loads), 2, "NOT_FOUND cached negatively");

  atomic_store(&answer, PERFC_STATUS_UNAVAILABLE);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(call(ch, "k3", 0), PERFC_STATUS_UNAVAILABLE);
  cr_assert_eq(atomic_load(&loads), 5, "other errors are never cached");

  atomic_store(&answer, PERFC_STATUS_OK);
  cr_assert_eq(call(ch, "k1", 1), PERFC_STATUS_OK); /* invalidate */
  cr_assert_eq(call(ch, "k1", 0), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&loads), 6, "invalidation makes the next call load");

  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_cache_free(cache);
}

/* Packs `msg` and compares with `want`. */

/* A cached NOT_FOUND answers with the handler's own message (kept with the
 * negative entry as its note), not a generic one: the first call (the
 * load) and every cached answer after it say the same; the note is cut at
 * 256 bytes on a character boundary; a handler without a message gives
 * the generic "not found" from the cache too. */
Test(cache_rpc, cached_not_found_keeps_the_handlers_message) {
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = "rpc_note";
  cr_assert_eq(perfc_cache_new(&cache, &co), 0);
  perfc_server *srv;
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &cached_impl, NULL), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  perfc_channel *ch;
  char target[64], msg[512];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  atomic_store(&loads, 0);
  atomic_store(&answer, PERFC_STATUS_NOT_FOUND);

  atomic_store(&not_found_msg, "thing 7 not found");
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(call_msg(ch, "n1", 0, msg, sizeof msg), PERFC_STATUS_NOT_FOUND);
    cr_expect_str_eq(msg, "thing 7 not found", "call %d", i);
  }
  cr_assert_eq(atomic_load(&loads), 1, "the later answers came from the cache");

  /* a long message: cut at 256 bytes, before the 2-byte character that
   * would straddle the limit */
  char longmsg[400];
  memset(longmsg, 'a', 255);
  strcpy(longmsg + 255, "\xc3\xa9 and more");
  atomic_store(&not_found_msg, (const char *)longmsg);
  cr_assert_eq(call_msg(ch, "n2", 0, msg, sizeof msg), PERFC_STATUS_NOT_FOUND);
  cr_expect_str_eq(msg, longmsg, "the load's own answer is whole");
  cr_assert_eq(call_msg(ch, "n2", 0, msg, sizeof msg), PERFC_STATUS_NOT_FOUND);
  cr_expect_eq(strlen(msg), 255, "note cut to %zu bytes", strlen(msg));
  cr_expect_eq(strncmp(msg, longmsg, 255), 0);

  /* no message from the handler: the generic one, both times */
  atomic_store(&not_found_msg, NULL);
  cr_assert_eq(call_msg(ch, "n3", 0, msg, sizeof msg), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(call_msg(ch, "n3", 0, msg, sizeof msg), PERFC_STATUS_NOT_FOUND);
  cr_expect_str_eq(msg, "not found");
  cr_assert_eq(atomic_load(&loads), 3);

  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_cache_free(cache);
}
