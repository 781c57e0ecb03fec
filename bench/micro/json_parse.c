/*
 * json_parse.c — microbenchmark: which Debian JSON parser the HTTP gateway
 * (runtime/src/gateway/json_decode.c) builds on. Each case parses the same
 * realistic request body (an UpdateUser-like object, 494 bytes: nested
 * object, strings, numbers, bools, an array, a map) and walks every value
 * the way the decoder does (keys compared, strings and numbers read), then
 * releases what it allocated:
 *   yajl     yajl 2.1 event parser (yajl_alloc with our allocator: a bump
 *            arena reset per call, as the gateway's call arena), callbacks
 *            building a small tree in that arena, then the walk
 *   yajltree yajl_tree_parse (malloc'd tree; needs a NUL-terminated copy)
 *   jansson  json_loadb + walk + json_decref (malloc; jansson's allocator
 *            hooks are process-global, not per call)
 *   jsonc    json_tokener_parse_ex + walk + json_object_put (malloc; no
 *            allocator hook)
 *
 * Room: benchmarks (micro). Not built by CMake. Needs libyajl-dev,
 * libjansson-dev, libjson-c-dev:
 *
 *   cc -O2 bench/micro/json_parse.c bench/micro/json_parse_jsonc.c \
 *      -o build/json_parse \
 *      $(pkg-config --cflags --libs yajl jansson json-c)
 *   ./build/json_parse 200000            # nanoseconds per call, each case
 *   for c in yajl yajltree jansson jsonc; do
 *     valgrind --tool=callgrind --callgrind-out-file=cg.$c ./build/json_parse 20000 $c
 *     callgrind_annotate --inclusive=yes cg.$c | grep -E 'run_'
 *   done   # instructions per call = inclusive Ir of run_<case> / calls
 *
 * Results and the choice: docs/http-json.md, "Parsing: why yajl".
 */
#include <jansson.h>
#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char body[] =
    "{\"user\":{\"id\":\"1234567890123\",\"name\":\"Alice Example\","
    "\"email\":\"alice@example.com\",\"roles\":[\"admin\",\"editor\","
    "\"viewer\"],\"createTime\":\"2024-01-02T03:04:05.123Z\","
    "\"profile\":{\"bio\":\"Writes C for a living and likes \\\"quotes\\\" "
    "and \\u00e9l\\u00e8ves.\",\"age\":34,\"score\":98.625,\"verified\":true,"
    "\"labels\":{\"team\":\"core\",\"region\":\"eu-west-1\",\"tier\":\"gold\"}},"
    "\"balance\":\"-9007199254740993\",\"avatar\":\"aGVsbG8gd29ybGQ=\","
    "\"state\":\"USER_STATE_ACTIVE\"},\"updateMask\":\"name,email,profile.bio\","
    "\"etag\":null,\"dryRun\":false}";
const size_t body_len = sizeof body - 1;

volatile size_t sink;

/* ---- a bump arena, reset per call ---------------------------------------- */

static unsigned char arena[16384];
static size_t arena_used;

static void *a_malloc(void *ctx, size_t n) {
  (void)ctx;
  n = (n + 15) & ~(size_t)15;
  if (arena_used + n > sizeof arena)
    return NULL;
  void *p = arena + arena_used;
  arena_used += n;
  return p;
}
static void a_free(void *ctx, void *p) { (void)ctx, (void)p; }
static void *a_realloc(void *ctx, void *p, size_t n) {
  void *q = a_malloc(ctx, n);
  if (q && p)
    memcpy(q, p, n); /* over-copies from the arena; fine for a benchmark */
  return q;
}

/* ---- yajl events into an arena tree ----------------------------------- */

typedef struct node {
  int type; /* 0 null 1 bool 2 number 3 string 4 object 5 array */
  const char *key;
  size_t key_len;
  const char *str;
  size_t len;
  struct node *child, *last, *next, *parent;
} node;

typedef struct builder {
  node *cur; /* open container */
  node *root;
  const char *key;
  size_t key_len;
} builder;

static node *add(builder *b, int type) {
  node *n = a_malloc(NULL, sizeof *n);
  if (!n)
    abort();
  memset(n, 0, sizeof *n);
  n->type = type;
  n->key = b->key, n->key_len = b->key_len;
  b->key = NULL;
  n->parent = b->cur;
  if (b->cur) {
    if (b->cur->last)
      b->cur->last->next = n;
    else
      b->cur->child = n;
    b->cur->last = n;
  } else {
    b->root = n;
  }
  return n;
}
static char *dup(const unsigned char *s, size_t n) {
  char *d = a_malloc(NULL, n + 1);
  if (!d)
    abort();
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}
static int y_null(void *c) { return add(c, 0) != NULL; }
static int y_bool(void *c, int v) { add(c, 1)->len = (size_t)v; return 1; }
static int y_number(void *c, const char *s, size_t n) {
  node *x = add(c, 2);
  x->str = dup((const unsigned char *)s, n), x->len = n;
  return 1;
}
static int y_string(void *c, const unsigned char *s, size_t n) {
  node *x = add(c, 3);
  x->str = dup(s, n), x->len = n;
  return 1;
}
static int y_start_map(void *c) {
  builder *b = c;
  b->cur = add(b, 4);
  return 1;
}
static int y_key(void *c, const unsigned char *s, size_t n) {
  builder *b = c;
  b->key = dup(s, n), b->key_len = n;
  return 1;
}
static int y_end(void *c) {
  builder *b = c;
  b->cur = b->cur->parent;
  return 1;
}
static int y_start_array(void *c) {
  builder *b = c;
  b->cur = add(b, 5);
  return 1;
}
static const yajl_callbacks ycb = {y_null,  y_bool,      NULL,  NULL,
                                   y_number, y_string,   y_start_map, y_key,
                                   y_end,   y_start_array, y_end};

static size_t walk_node(const node *n) {
  size_t s = 0;
  for (; n; n = n->next) {
    if (n->key)
      s += n->key_len + (memcmp(n->key, "user", n->key_len < 4 ? n->key_len : 4) == 0);
    if (n->type == 2)
      s += (size_t)strtod(n->str, NULL);
    else if (n->type == 3)
      s += n->len;
    else if (n->type >= 4)
      s += walk_node(n->child);
  }
  return s;
}

__attribute__((noinline)) static void run_yajl(void) {
  arena_used = 0;
  yajl_alloc_funcs af = {a_malloc, a_realloc, a_free, NULL};
  builder b = {0};
  yajl_handle h = yajl_alloc(&ycb, &af, &b);
  if (yajl_parse(h, (const unsigned char *)body, sizeof body - 1) !=
          yajl_status_ok ||
      yajl_complete_parse(h) != yajl_status_ok)
    abort();
  sink += walk_node(b.root);
  yajl_free(h);
}

/* ---- yajl_tree --------------------------------------------------------- */

static size_t walk_yt(yajl_val v) {
  size_t s = 0;
  if (YAJL_IS_OBJECT(v)) {
    for (size_t i = 0; i < v->u.object.len; i++) {
      const char *k = v->u.object.keys[i];
      s += strlen(k) + (strcmp(k, "user") == 0) + walk_yt(v->u.object.values[i]);
    }
  } else if (YAJL_IS_ARRAY(v)) {
    for (size_t i = 0; i < v->u.array.len; i++)
      s += walk_yt(v->u.array.values[i]);
  } else if (YAJL_IS_STRING(v)) {
    s += strlen(v->u.string);
  } else if (YAJL_IS_NUMBER(v)) {
    s += (size_t)strtod(v->u.number.r, NULL);
  }
  return s;
}

__attribute__((noinline)) static void run_yajltree(void) {
  char copy[sizeof body];
  memcpy(copy, body, sizeof body);
  char err[128];
  yajl_val v = yajl_tree_parse(copy, err, sizeof err);
  if (!v)
    abort();
  sink += walk_yt(v);
  yajl_tree_free(v);
}

/* ---- jansson ----------------------------------------------------------- */

static size_t walk_j(json_t *v) {
  size_t s = 0;
  const char *k;
  json_t *x;
  size_t i;
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    json_object_foreach(v, k, x) s += strlen(k) + (strcmp(k, "user") == 0) + walk_j(x);
    break;
  case JSON_ARRAY:
    json_array_foreach(v, i, x) s += walk_j(x);
    break;
  case JSON_STRING:
    s += json_string_length(v);
    break;
  case JSON_INTEGER:
    s += (size_t)json_integer_value(v);
    break;
  case JSON_REAL:
    s += (size_t)json_real_value(v);
    break;
  default:
    break;
  }
  return s;
}

__attribute__((noinline)) static void run_jansson(void) {
  json_error_t e;
  json_t *v = json_loadb(body, sizeof body - 1, 0, &e);
  if (!v)
    abort();
  sink += walk_j(v);
  json_decref(v);
}

/* json-c's headers and jansson's cannot share a file (both declare
 * json_object_iter); its case lives in json_parse_jsonc.c. */
void run_jsonc(void);

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  long calls = argc > 1 ? atol(argv[1]) : 100000;
  const char *only = argc > 2 ? argv[2] : NULL;
  static const struct {
    const char *name;
    void (*run)(void);
  } cases[] = {{"yajl", run_yajl},
               {"yajltree", run_yajltree},
               {"jansson", run_jansson},
               {"jsonc", run_jsonc}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    if (only && strcmp(only, cases[c].name) != 0)
      continue;
    double t0 = now_ns();
    for (long i = 0; i < calls; i++)
      cases[c].run();
    printf("%-9s %7.0f ns/call (%zu bytes)\n", cases[c].name,
           (now_ns() - t0) / (double)calls, sizeof body - 1);
  }
  return 0;
}
