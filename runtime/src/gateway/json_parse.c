/*
 * json_parse.c — JSON text to an arena tree with yajl's event parser.
 *
 * Room: runtime/src/gateway (libperfc-gateway). Why yajl, and why a tree:
 * docs/http-json.md ("Parsing: why yajl"): of the three Debian parsers
 * only yajl takes an allocator per parser (json-c has none, jansson's is
 * process-wide), so every byte of a request lands in the call's arena and
 * goes with it; building our own small tree from its events costs 19.8k
 * instructions for a 494-byte body against 55k (json-c) and 100k (jansson)
 * for their trees (bench/micro/json_parse.c). The decoder needs a tree
 * rather than events because a message's fields may arrive in any order and
 * "@type" of an Any may come last.
 */
#include "gateway/json_internal.h"

#include <stdio.h>
#include <string.h>
#include <yajl/yajl_parse.h>

typedef struct builder {
  perfc_arena *a;
  perfc__jnode *cur;
  perfc__jnode *root;
  const char *key;
  size_t key_len;
  size_t depth, max_depth;
  int too_deep, oom, nul;
} builder;

/* yajl's allocations (lexer buffer, parse-state stack) come from the
 * arena too. yajl's realloc passes no old size, so each block carries its
 * size in a header; a grown block leaves the old one in the arena until the
 * call ends, which at most doubles what yajl holds. */
static void *y_malloc(void *ctx, size_t n) {
  size_t *q = perfc_arena_alloc(ctx, n + 2 * sizeof(size_t));
  if (!q)
    return NULL;
  q[0] = n;
  return q + 2;
}

static void y_free(void *ctx, void *p) { (void)ctx, (void)p; }

static void *y_realloc(void *ctx, void *p, size_t n) {
  void *q = y_malloc(ctx, n);
  if (q && p) {
    size_t old = ((const size_t *)p)[-2];
    memcpy(q, p, old < n ? old : n);
  }
  return q;
}

static perfc__jnode *add(builder *b, perfc__jtype type) {
  perfc__jnode *n = perfc_arena_calloc(b->a, sizeof *n);
  if (!n) {
    b->oom = 1;
    return NULL;
  }
  n->type = type;
  n->key = b->key;
  n->key_len = b->key_len;
  b->key = NULL;
  n->parent = b->cur;
  if (b->cur) {
    if (b->cur->last)
      b->cur->last->next = n;
    else
      b->cur->child = n;
    b->cur->last = n;
    b->cur->n++;
  } else {
    b->root = n;
  }
  return n;
}

static char *dup(builder *b, const unsigned char *s, size_t n) {
  char *d = perfc_arena_strndup(b->a, (const char *)s, n);
  if (!d)
    b->oom = 1;
  else if (memchr(s, 0, n))
    b->nul = 1;
  return d;
}

static int y_null(void *c) { return add(c, PERFC__J_NULL) != NULL; }

static int y_bool(void *c, int v) {
  perfc__jnode *n = add(c, PERFC__J_BOOL);
  if (n)
    n->b = v;
  return n != NULL;
}

static int y_number(void *c, const char *s, size_t len) {
  perfc__jnode *n = add(c, PERFC__J_NUMBER);
  if (!n || !(n->s = dup(c, (const unsigned char *)s, len)))
    return 0;
  n->len = len;
  return 1;
}

static int y_string(void *c, const unsigned char *s, size_t len) {
  perfc__jnode *n = add(c, PERFC__J_STRING);
  if (!n || !(n->s = dup(c, s, len)))
    return 0;
  n->len = len;
  return 1;
}

static int open_container(builder *b, perfc__jtype type) {
  if (++b->depth > b->max_depth) {
    b->too_deep = 1;
    return 0;
  }
  perfc__jnode *n = add(b, type);
  if (!n)
    return 0;
  b->cur = n;
  return 1;
}

static int y_start_map(void *c) { return open_container(c, PERFC__J_OBJECT); }
static int y_start_array(void *c) { return open_container(c, PERFC__J_ARRAY); }

static int y_key(void *c, const unsigned char *s, size_t len) {
  builder *b = c;
  b->key = dup(b, s, len);
  b->key_len = len;
  return b->key != NULL;
}

static int y_end(void *c) {
  builder *b = c;
  b->depth--;
  b->cur = b->cur->parent;
  return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = y_null,
    .yajl_boolean = y_bool,
    .yajl_number = y_number, /* numbers as text: int64 keeps every digit */
    .yajl_string = y_string,
    .yajl_start_map = y_start_map,
    .yajl_map_key = y_key,
    .yajl_end_map = y_end,
    .yajl_start_array = y_start_array,
    .yajl_end_array = y_end,
};

int perfc__json_parse(perfc_arena *a, const char *json, size_t len,
                      size_t max_depth, perfc__jnode **root) {
  builder b = {.a = a, .max_depth = max_depth};
  yajl_alloc_funcs af = {y_malloc, y_realloc, y_free, a};
  yajl_handle h = yajl_alloc(&callbacks, &af, &b);
  if (!h)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "json: out of memory");
  /* Strict JSON: no comments, UTF-8 checked, one value, nothing after. */
  yajl_status st = yajl_parse(h, (const unsigned char *)json, len);
  if (st == yajl_status_ok)
    st = yajl_complete_parse(h);
  int rc = 0;
  if (b.oom) {
    rc = perfc_error_set(PERFC_ENOMEM, NULL, -1, "json: out of memory");
  } else if (b.too_deep) {
    rc = perfc_error_set(PERFC_ETOOBIG, NULL, -1,
                         "json: nested deeper than %zu objects and arrays",
                         max_depth);
  } else if (st != yajl_status_ok) {
    /* yajl's message is "lexical error: invalid char in json text." and
     * the like, plus a two-line excerpt; keep its first line and add the
     * byte offset, which is what a caller can act on. */
    unsigned char *msg = yajl_get_error(h, 0, NULL, 0);
    const char *m = msg ? (const char *)msg : "parse error";
    size_t ml = strcspn(m, "\n");
    while (ml && (m[ml - 1] == '.' || m[ml - 1] == ' '))
      ml--;
    rc = perfc_error_set(PERFC_EPARSE, NULL, -1,
                         "json: malformed at byte %zu: %.*s",
                         yajl_get_bytes_consumed(h), (int)ml, m);
    if (msg)
      yajl_free_error(h, msg);
  } else if (b.nul) {
    rc = perfc_error_set(PERFC_EPARSE, NULL, -1,
                         "json: a string or name contains \\u0000, which "
                         "protobuf-c's C strings cannot hold");
  } else if (!b.root) {
    rc = perfc_error_set(PERFC_EPARSE, NULL, -1, "json: empty document");
  }
  yajl_free(h);
  if (rc == 0)
    *root = b.root;
  return rc;
}
