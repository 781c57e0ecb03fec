/*
 * test_h2_mem.c — transport/h2/mem.c: the loop's allocator for nghttp2.
 * Blocks are reused by size class, realloc keeps or moves the bytes, calloc
 * zeroes, the cache stays under its cap, and a real nghttp2 session (HPACK
 * tables, streams, frames) runs on it and leaves nothing behind.
 *
 * Room: tests/unit.
 */
#include "transport/h2/mem_internal.h"

#include <criterion/criterion.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static perfc__h2_mem_stats stats(perfc__h2_mem *m) {
  perfc__h2_mem_stats s;
  perfc__h2_mem_get_stats(m, &s);
  return s;
}

Test(h2_mem, a_freed_block_is_reused_for_its_size_class_only) {
  perfc__h2_mem *m;
  cr_assert_eq(perfc__h2_mem_new(&m, 0), 0);
  nghttp2_mem *ng = perfc__h2_mem_ng(m);
  void *a = ng->malloc(100, ng->mem_user_data); /* 100 + 16 -> 128 class */
  cr_assert_not_null(a);
  cr_assert_eq((uintptr_t)a % 16, 0, "16-byte alignment, as malloc's");
  memset(a, 0xab, 100);
  ng->free(a, ng->mem_user_data);
  cr_assert_eq(stats(m).cached_blocks, 1);
  cr_assert_eq(stats(m).cached_bytes, 128);
  /* Another class: a fresh block; the same class: the cached one. */
  void *b = ng->malloc(200, ng->mem_user_data);
  cr_assert_neq(b, a);
  cr_assert_eq(stats(m).reused, 0);
  void *c = ng->malloc(112, ng->mem_user_data); /* 112 + 16 = 128 */
  cr_assert_eq(c, a);
  cr_assert_eq(stats(m).reused, 1);
  cr_assert_eq(stats(m).cached_blocks, 0);
  ng->free(b, ng->mem_user_data);
  ng->free(c, ng->mem_user_data);
  ng->free(NULL, ng->mem_user_data);
  cr_assert_eq(stats(m).cached_blocks, 2);
  perfc__h2_mem_release(m);
  cr_assert_eq(stats(m).cached_blocks, 0);
  cr_assert_eq(stats(m).cached_bytes, 0);
  perfc__h2_mem_free(m);
}

Test(h2_mem, large_blocks_bypass_the_cache) {
  perfc__h2_mem *m;
  cr_assert_eq(perfc__h2_mem_new(&m, 0), 0);
  nghttp2_mem *ng = perfc__h2_mem_ng(m);
  void *a = ng->malloc(PERFC__H2_MEM_MAX_CLASS, ng->mem_user_data);
  cr_assert_not_null(a);
  memset(a, 1, PERFC__H2_MEM_MAX_CLASS);
  cr_assert_eq(stats(m).large, 1);
  ng->free(a, ng->mem_user_data);
  cr_assert_eq(stats(m).cached_blocks, 0);
  /* The largest small block: 4096 - 16 bytes. */
  void *b = ng->malloc(PERFC__H2_MEM_MAX_CLASS - 16, ng->mem_user_data);
  ng->free(b, ng->mem_user_data);
  cr_assert_eq(stats(m).cached_bytes, PERFC__H2_MEM_MAX_CLASS);
  cr_assert_eq(stats(m).large, 1);
  perfc__h2_mem_free(m);
}

Test(h2_mem, realloc_keeps_the_bytes_across_classes_and_into_large) {
  perfc__h2_mem *m;
  cr_assert_eq(perfc__h2_mem_new(&m, 0), 0);
  nghttp2_mem *ng = perfc__h2_mem_ng(m);
  void *ud = ng->mem_user_data;
  uint8_t *p = ng->realloc(NULL, 10, ud); /* realloc(NULL) = malloc */
  for (int i = 0; i < 10; i++)
    p[i] = (uint8_t)i;
  /* Still fits its 32-byte block: the same pointer. */
  cr_assert_eq(ng->realloc(p, 16, ud), p);
  uint8_t *q = ng->realloc(p, 1000, ud);
  cr_assert_neq(q, p);
  for (int i = 0; i < 10; i++)
    cr_assert_eq(q[i], i);
  cr_assert_eq(stats(m).cached_blocks, 1, "the old block went to its list");
  for (int i = 10; i < 1000; i++)
    q[i] = (uint8_t)(i * 7);
  uint8_t *r = ng->realloc(q, 100000, ud); /* to a large block */
  for (int i = 0; i < 1000; i++)
    cr_assert_eq(r[i], i < 10 ? i : (uint8_t)(i * 7));
  uint8_t *s = ng->realloc(r, 200000, ud); /* large to large */
  for (int i = 0; i < 1000; i++)
    cr_assert_eq(s[i], i < 10 ? i : (uint8_t)(i * 7));
  uint8_t *t = ng->realloc(s, 40, ud); /* back to a small class */
  for (int i = 0; i < 10; i++)
    cr_assert_eq(t[i], i);
  ng->free(t, ud);
  perfc__h2_mem_free(m);
}

Test(h2_mem, calloc_zeroes_a_reused_block_and_refuses_overflow) {
  perfc__h2_mem *m;
  cr_assert_eq(perfc__h2_mem_new(&m, 0), 0);
  nghttp2_mem *ng = perfc__h2_mem_ng(m);
  void *ud = ng->mem_user_data;
  uint8_t *a = ng->malloc(48, ud);
  memset(a, 0xff, 48);
  ng->free(a, ud);
  uint8_t *b = ng->calloc(6, 8, ud);
  cr_assert_eq(b, a, "the same 64-byte block");
  for (int i = 0; i < 48; i++)
    cr_assert_eq(b[i], 0);
  cr_assert_null(ng->calloc(SIZE_MAX / 2, 4, ud));
  cr_assert_null(ng->malloc(SIZE_MAX - 8, ud));
  ng->free(b, ud);
  perfc__h2_mem_free(m);
}

Test(h2_mem, the_cache_stays_under_its_cap) {
  perfc__h2_mem *m;
  cr_assert_eq(perfc__h2_mem_new(&m, 4096), 0);
  nghttp2_mem *ng = perfc__h2_mem_ng(m);
  void *ud = ng->mem_user_data;
  void *p[100];
  for (int i = 0; i < 100; i++)
    p[i] = ng->malloc(200, ud); /* 256-byte class */
  for (int i = 0; i < 100; i++)
    ng->free(p[i], ud);
  cr_assert_eq(stats(m).cached_bytes, 4096);
  cr_assert_eq(stats(m).cached_blocks, 16);
  perfc__h2_mem_free(m);
}

Test(h2_mem, direct_mode_mallocs_exact_sizes_and_caches_nothing) {
  perfc__h2_mem *m;
  cr_assert_eq(perfc__h2_mem_new(&m, 0), 0);
  nghttp2_mem *ng = perfc__h2_mem_ng(m);
  void *ud = ng->mem_user_data;
  void *small = ng->malloc(100, ud); /* a size-class block */
  perfc__h2_mem_direct(m, 1);
  uint8_t *d = ng->malloc(100, ud);
  cr_assert_eq(stats(m).large, 1, "malloc'ed at its size, no class");
  memset(d, 7, 100);
  uint8_t *d2 = ng->realloc(d, 300, ud);
  for (int i = 0; i < 100; i++)
    cr_assert_eq(d2[i], 7);
  ng->free(d2, ud);
  ng->free(small, ud); /* a class block freed while direct: not cached */
  cr_assert_eq(stats(m).cached_blocks, 0);
  perfc__h2_mem_direct(m, 0);
  void *again = ng->malloc(100, ud);
  ng->free(again, ud);
  cr_assert_eq(stats(m).cached_blocks, 1);
  perfc__h2_mem_free(m);
}

/* ---- a real session on it ------------------------------------------------ */

typedef struct wire {
  uint8_t buf[1 << 16];
  size_t len;
} wire;

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len,
                       int flags, void *user) {
  (void)s;
  (void)flags;
  wire *w = user;
  if (w->len + len > sizeof w->buf)
    return NGHTTP2_ERR_WOULDBLOCK;
  memcpy(w->buf + w->len, data, len);
  w->len += len;
  return (ssize_t)len;
}

/* Header fields each side has read: the server's requests, the client's
 * responses (told apart by the session's user data, the wire it writes). */
static int server_fields, client_fields;
static wire *server_out;

static int on_error(nghttp2_session *s, int code, const char *msg, size_t len,
                    void *user) {
  (void)s;
  (void)user;
  fprintf(stderr, "nghttp2 error %d: %.*s\n", code, (int)len, msg);
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user) {
  (void)s;
  (void)f;
  (void)name;
  (void)namelen;
  (void)value;
  (void)valuelen;
  (void)flags;
  if (user == server_out)
    server_fields++;
  else
    client_fields++;
  return 0;
}

Test(h2_mem, a_server_session_runs_on_it_and_returns_every_block) {
  perfc__h2_mem *m;
  cr_assert_eq(perfc__h2_mem_new(&m, 0), 0);
  nghttp2_session_callbacks *cb;
  cr_assert_eq(nghttp2_session_callbacks_new(&cb), 0);
  nghttp2_session_callbacks_set_send_callback(cb, send_cb);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_error_callback2(cb, on_error);
  wire *to_server = calloc(1, sizeof *to_server);
  wire *to_client = calloc(1, sizeof *to_client);
  nghttp2_session *client, *server;
  cr_assert_eq(nghttp2_session_client_new(&client, cb, to_server), 0);
  cr_assert_eq(nghttp2_session_server_new3(&server, cb, to_client, NULL,
                                           perfc__h2_mem_ng(m)),
               0);
  server_out = to_client;
  server_fields = client_fields = 0;
  /* Each side's first SETTINGS frame is the application's to submit. */
  cr_assert_eq(nghttp2_submit_settings(client, NGHTTP2_FLAG_NONE, NULL, 0), 0);
  cr_assert_eq(nghttp2_submit_settings(server, NGHTTP2_FLAG_NONE, NULL, 0), 0);
  int32_t next_id = 1;
  for (int round = 0; round < 5; round++) {
    for (int i = 0; i < 20; i++) {
      char path[64];
      snprintf(path, sizeof path, "/svc.v1.Svc/Method%d", i);
      const nghttp2_nv nv[] = {
          {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
          {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
          {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
          {(uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0},
          {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
      };
      cr_assert_gt(nghttp2_submit_request(client, NULL, nv, 5, NULL, NULL), 0);
    }
    cr_assert_eq(nghttp2_session_send(client), 0);
    cr_assert_eq(nghttp2_session_mem_recv(server, to_server->buf, to_server->len),
                 (ssize_t)to_server->len);
    to_server->len = 0;
    /* Every stream answered and closed, so its blocks are freed. */
    const nghttp2_nv status[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0}};
    for (int i = 0; i < 20; i++, next_id += 2)
      cr_assert_eq(nghttp2_submit_response(server, next_id, status, 1, NULL), 0);
    cr_assert_eq(nghttp2_session_send(server), 0);
    cr_assert_eq(nghttp2_session_mem_recv(client, to_client->buf, to_client->len),
                 (ssize_t)to_client->len);
    to_client->len = 0;
  }
  cr_assert_eq(server_fields, 5 * 20 * 5, "server fields: %d", server_fields);
  cr_assert_eq(client_fields, 5 * 20, "client fields: %d", client_fields);
  perfc__h2_mem_stats st = stats(m);
  cr_assert_gt(st.allocs, 150, "the session allocated through the loop's mem");
  cr_assert_gt(st.reused, 0, "and reused freed blocks");
  nghttp2_session_del(server);
  nghttp2_session_del(client);
  nghttp2_session_callbacks_del(cb);
  free(to_server);
  free(to_client);
  perfc__h2_mem_free(m); /* ASan: no leak, no block used after this */
}
