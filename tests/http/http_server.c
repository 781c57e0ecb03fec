/*
 * http_server.c — perfc-http-test-server: web.v1.Web (tests/http/proto)
 * served over gRPC and, through perfc_gateway_attach(), HTTP/JSON on the
 * same port, for tests/http/test_http.py.
 *
 * Room: tests/http.
 *
 * Usage: perfc-http-test-server [--listen HOST:PORT] [--max-body BYTES]
 *          [--idle-ms MS] [--max-metadata-bytes N] [--threads N]
 *          [--cors-origin ORIGIN]... (up to 4) [--tls-cert F --tls-key F]
 *          [--gzip-min-bytes N] [--gzip-level -1..9]
 *          [--http-cache revalidate|max_age|off] [--redis-port N]
 * Prints "listening on HOST:PORT" and "metrics on HOST:PORT" (the
 * go-grpc-prometheus interceptor's /metrics, with the HTTP/JSON calls'
 * perfc_server_http_handled_total) once serving; SIGTERM/SIGINT stop it.
 *
 * Things are kept in a small table under a lock (ids 1..64). Limited is
 * limited by perfc_ratelimit to 2 calls a second (burst 2), so an HTTP
 * client sees the interceptor's RESOURCE_EXHAUSTED as 429. Fail answers
 * the code it is given after sleeping sleep_ms on a worker (the deadline
 * test). DeleteThing needs `Authorization: Bearer <JWT>` (HS256, secret
 * "perfc-http-test-secret-0123456789abcdef"; perfc_auth), every other
 * method is public. Upload (a client stream) answers the count of its
 * messages in `size` and the sum of their ids in `id`; Chat (bidi) echoes
 * each message as it arrives; a message named "fail" ends either with
 * FAILED_PRECONDITION (Upload) or ABORTED (Chat); one named "slow"
 * makes Upload sleep 2 s before reading on. WhoAmI echoes the metadata the handler sees and its remaining
 * deadline.
 * Notes (ids 1..64) are served through the declarative cache
 * (register_cached): an L1 perfc_cache, with Redis on 127.0.0.1 as L2 when
 * --redis-port is given. GetNote's answer counts the loads of its note.
 */
#include "web/v1/web.perfc.h"

#include "perfc/auth.h"
#include "perfc/cache.h"
#include "perfc/gateway.h"
#include "perfc/grpc_metrics.h"
#include "perfc/metrics.h"
#include "perfc/metrics_http.h"
#include "perfc/ratelimit.h"
#include "perfc/server.h"
#include "perfc/tls.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THINGS 64
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
  int used;
  char name[64];
  int32_t size;
} things[MAX_THINGS + 1];

static void fill(perfc_ctx *ctx, Web__V1__Thing *t, int64_t id) {
  t->id = id;
  t->name = perfc_arena_strdup(perfc_ctx_arena(ctx), things[id].name);
  t->size = things[id].size;
}

static perfc_status_code get_thing(perfc_ctx *ctx,
                                   const Web__V1__GetThingRequest *req,
                                   Web__V1__Thing *resp, void *ud) {
  (void)ud;
  if (req->id < 1 || req->id > MAX_THINGS)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "id %lld is out of range 1..%d", (long long)req->id,
                           MAX_THINGS);
  pthread_mutex_lock(&mu);
  int used = things[req->id].used;
  if (used)
    fill(ctx, resp, req->id);
  pthread_mutex_unlock(&mu);
  if (!used)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "thing %lld not found",
                           (long long)req->id);
  if (req->view[0] != '\0') {
    resp->n_tags = 1;
    resp->tags = perfc_ctx_alloc(ctx, sizeof *resp->tags);
    resp->tags[0] = perfc_arena_sprintf(perfc_ctx_arena(ctx), "view=%s", req->view);
  }
  return PERFC_STATUS_OK;
}

static perfc_status_code create_thing(perfc_ctx *ctx, const Web__V1__Thing *req,
                                      Web__V1__Thing *resp, void *ud) {
  (void)ud;
  if (req->id < 1 || req->id > MAX_THINGS)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "id %lld is out of range 1..%d", (long long)req->id,
                           MAX_THINGS);
  pthread_mutex_lock(&mu);
  int dup = things[req->id].used;
  if (!dup) {
    things[req->id].used = 1;
    snprintf(things[req->id].name, sizeof things[0].name, "%s", req->name);
    things[req->id].size = req->size;
    fill(ctx, resp, req->id);
  }
  pthread_mutex_unlock(&mu);
  if (dup)
    return perfc_ctx_error(ctx, PERFC_STATUS_ALREADY_EXISTS,
                           "thing %lld exists", (long long)req->id);
  resp->n_tags = req->n_tags;
  resp->tags = req->tags;
  return PERFC_STATUS_OK;
}

static perfc_status_code update_thing(perfc_ctx *ctx,
                                      const Web__V1__UpdateThingRequest *req,
                                      Web__V1__Thing *resp, void *ud) {
  (void)ud;
  if (req->thing == NULL || req->thing->id < 1 || req->thing->id > MAX_THINGS)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT, "no thing id");
  int64_t id = req->thing->id;
  pthread_mutex_lock(&mu);
  int used = things[id].used;
  if (used) {
    snprintf(things[id].name, sizeof things[0].name, "%s", req->thing->name);
    things[id].size = req->thing->size;
    fill(ctx, resp, id);
  }
  pthread_mutex_unlock(&mu);
  if (!used)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "thing %lld not found",
                           (long long)id);
  return PERFC_STATUS_OK;
}

static perfc_status_code delete_thing(perfc_ctx *ctx,
                                      const Web__V1__GetThingRequest *req,
                                      Google__Protobuf__Empty *resp, void *ud) {
  (void)ud;
  (void)resp;
  int used = 0;
  pthread_mutex_lock(&mu);
  if (req->id >= 1 && req->id <= MAX_THINGS) {
    used = things[req->id].used;
    things[req->id].used = 0;
  }
  pthread_mutex_unlock(&mu);
  if (!used)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "thing %lld not found",
                           (long long)req->id);
  return PERFC_STATUS_OK;
}

static perfc_status_code list_things(perfc_ctx *ctx,
                                     const Web__V1__ListThingsRequest *req,
                                     Web__V1__ListThingsResponse *resp,
                                     void *ud) {
  (void)ud;
  perfc_arena *a = perfc_ctx_arena(ctx);
  resp->things = perfc_arena_alloc(a, MAX_THINGS * sizeof *resp->things);
  const char *name = req->filter ? req->filter->name : "";
  int32_t min = req->filter ? req->filter->min_size : 0;
  pthread_mutex_lock(&mu);
  for (int64_t id = 1; id <= MAX_THINGS; id++) {
    if (!things[id].used || things[id].size < min ||
        (name[0] && strcmp(name, things[id].name) != 0))
      continue;
    if (req->page_size > 0 && resp->n_things >= (size_t)req->page_size)
      break;
    Web__V1__Thing *t = perfc_arena_alloc(a, sizeof *t);
    web__v1__thing__init(t);
    fill(ctx, t, id);
    /* The query's repeated tags come back on every thing. */
    t->n_tags = req->n_tags;
    t->tags = req->tags;
    resp->things[resp->n_things++] = t;
  }
  pthread_mutex_unlock(&mu);
  resp->next_page_token =
      perfc_arena_sprintf(a, "after-%zu", resp->n_things);
  return PERFC_STATUS_OK;
}

static perfc_status_code ping(perfc_ctx *ctx, const Google__Protobuf__Empty *req,
                              Google__Protobuf__Empty *resp, void *ud) {
  (void)ctx;
  (void)req;
  (void)resp;
  (void)ud;
  return PERFC_STATUS_OK;
}

static perfc_status_code fail(perfc_ctx *ctx, const Web__V1__FailRequest *req,
                              Web__V1__Thing *resp, void *ud) {
  (void)ud;
  (void)resp;
  for (int i = 0; i < req->sleep_ms / 10 && !perfc_ctx_cancelled(ctx); i++) {
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  /* Stopped by the deadline: say so (an OK here could beat h2's own
   * DEADLINE_EXCEEDED to the client). */
  if (req->sleep_ms > 0 && perfc_ctx_cancelled(ctx))
    return perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "stopped early");
  if (req->code < 0 || req->code >= PERFC_STATUS_COUNT)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT, "code %d",
                           req->code);
  if (req->code == 0) {
    resp->name = "ok";
    return PERFC_STATUS_OK;
  }
  return perfc_ctx_error(ctx, (perfc_status_code)req->code, "%s", req->message);
}

static perfc_status_code who_am_i(perfc_ctx *ctx,
                                  const Google__Protobuf__Empty *req,
                                  Web__V1__WhoAmIResponse *resp, void *ud) {
  (void)req;
  (void)ud;
  perfc_arena *a = perfc_ctx_arena(ctx);
  size_t n = perfc_ctx_metadata_count(ctx);
  resp->metadata = perfc_arena_alloc(a, (n ? n : 1) * sizeof *resp->metadata);
  for (size_t i = 0; i < n; i++) {
    perfc_slice k, v;
    perfc_ctx_metadata_at(ctx, i, &k, &v);
    Web__V1__WhoAmIResponse__MetadataEntry *e = perfc_arena_alloc(a, sizeof *e);
    web__v1__who_am_iresponse__metadata_entry__init(e);
    e->key = perfc_arena_strndup(a, (const char *)k.base, k.len);
    e->value = perfc_arena_strndup(a, (const char *)v.base, v.len);
    resp->metadata[resp->n_metadata++] = e;
    if (k.len == 13 && memcmp(k.base, "authorization", 13) == 0)
      resp->authorization = e->value;
  }
  int64_t left = perfc_ctx_remaining_ms(ctx);
  resp->remaining_ms = left == INT64_MAX ? -1 : left;
  resp->method = (char *)perfc_ctx_method(ctx);
  perfc_ctx_add_initial_metadata(ctx, "x-served-by", "perfc", 0);
  return PERFC_STATUS_OK;
}

static perfc_status_code limited(perfc_ctx *ctx, const Google__Protobuf__Empty *req,
                                 Google__Protobuf__Empty *resp, void *ud) {
  return ping(ctx, req, resp, ud);
}

static perfc_status_code stream_things(perfc_ctx *ctx,
                                       const Web__V1__ListThingsRequest *req,
                                       perfc_stream *writer, void *ud) {
  (void)ud;
  for (int32_t i = 1; i <= req->page_size; i++) {
    Web__V1__Thing t = WEB__V1__THING__INIT;
    t.id = i;
    t.name = perfc_arena_sprintf(perfc_ctx_arena(ctx), "thing-%d", i);
    t.size = i * 10;
    if (web__v1__web__stream_things__send(writer, &t) != 0)
      return perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "client gone at %d", i);
  }
  if (req->fail_code != 0)
    return perfc_ctx_error(ctx, (perfc_status_code)req->fail_code,
                           "failed after %d things", req->page_size);
  return PERFC_STATUS_OK;
}

static perfc_status_code upload(perfc_ctx *ctx, perfc_stream *reader,
                                Web__V1__Thing *resp, void *ud) {
  (void)ud;
  Web__V1__Thing *m;
  int rc;
  while ((rc = web__v1__web__upload__recv(reader, &m)) == 1) {
    resp->size++;
    resp->id += m->id;
    if (m->name != NULL && strcmp(m->name, "fail") == 0)
      return perfc_ctx_error(ctx, PERFC_STATUS_FAILED_PRECONDITION,
                             "upload refused at message %d", resp->size);
    /* A handler that falls behind its client for 2 s (the back-pressure
     * test): what the client sends meanwhile must wait outside the server. */
    for (int i = 0; m->name != NULL && strcmp(m->name, "slow") == 0 && i < 200 &&
                    !perfc_ctx_cancelled(ctx);
         i++) {
      struct timespec ts = {0, 10 * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
  return rc < 0 ? perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "recv %d", rc)
                : PERFC_STATUS_OK;
}

static perfc_status_code chat(perfc_ctx *ctx, perfc_stream *stream, void *ud) {
  (void)ud;
  Web__V1__Thing *m;
  int rc;
  int n = 0;
  while ((rc = web__v1__web__chat__recv(stream, &m)) == 1) {
    n++;
    if (m->name != NULL && strcmp(m->name, "fail") == 0)
      return perfc_ctx_error(ctx, PERFC_STATUS_ABORTED,
                             "chat aborted at message %d", n);
    if (web__v1__web__chat__send(stream, m) != 0)
      return PERFC_STATUS_CANCELLED;
  }
  return rc < 0 ? perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "recv %d", rc)
                : PERFC_STATUS_OK;
}

static struct {
  char text[2048];
  int64_t loads;
} notes[MAX_THINGS + 1];

static perfc_status_code get_note(perfc_ctx *ctx,
                                  const Web__V1__GetNoteRequest *req,
                                  Web__V1__Note *resp, void *ud) {
  (void)ud;
  if (req->id < 1 || req->id > MAX_THINGS)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "note %lld not found",
                           (long long)req->id);
  pthread_mutex_lock(&mu);
  resp->id = req->id;
  resp->text = perfc_arena_strdup(perfc_ctx_arena(ctx), notes[req->id].text);
  resp->loads = ++notes[req->id].loads;
  pthread_mutex_unlock(&mu);
  return PERFC_STATUS_OK;
}

static perfc_status_code update_note(perfc_ctx *ctx, const Web__V1__Note *req,
                                     Web__V1__Note *resp, void *ud) {
  (void)ud;
  if (req->id < 1 || req->id > MAX_THINGS)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "note id must be 1..%d", MAX_THINGS);
  pthread_mutex_lock(&mu);
  snprintf(notes[req->id].text, sizeof notes[req->id].text, "%s", req->text);
  resp->id = req->id;
  resp->text = perfc_arena_strdup(perfc_ctx_arena(ctx), notes[req->id].text);
  resp->loads = notes[req->id].loads;
  pthread_mutex_unlock(&mu);
  return PERFC_STATUS_OK;
}

static const Web__V1__Web_Handlers handlers = {
    .get_note = get_note,
    .get_note_default_ttl = get_note,
    .update_note = update_note,
    .get_thing = get_thing,
    .create_thing = create_thing,
    .update_thing = update_thing,
    .delete_thing = delete_thing,
    .list_things = list_things,
    .ping = ping,
    .fail = fail,
    .who_am_i = who_am_i,
    .limited = limited,
    .stream_things = stream_things,
    .upload = upload,
    .chat = chat,
};

int main(int argc, char **argv) {
  const char *listen = "127.0.0.1:0";
  int redis_port = 0;
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  perfc_gateway_opts go;
  perfc_gateway_opts_init(&go);
  const char *cors[4];
  size_t ncors = 0;
  perfc_tls_opts tls;
  perfc_tls_opts_init(&tls);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
      listen = argv[++i];
    else if (strcmp(argv[i], "--max-body") == 0 && i + 1 < argc)
      go.max_body_bytes = (size_t)strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--idle-ms") == 0 && i + 1 < argc)
      go.idle_timeout_ms = strtoll(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--max-metadata-bytes") == 0 && i + 1 < argc)
      o.max_metadata_bytes = (size_t)strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--cors-origin") == 0 && i + 1 < argc &&
             ncors < 4)
      cors[ncors++] = argv[++i];
    else if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc)
      tls.cert_file = argv[++i];
    else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc)
      tls.key_file = argv[++i];
    else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      o.threads = (unsigned)atoi(argv[++i]);
    else if (strcmp(argv[i], "--gzip-min-bytes") == 0 && i + 1 < argc)
      go.gzip_min_bytes = (size_t)strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--gzip-level") == 0 && i + 1 < argc)
      go.gzip_level = atoi(argv[++i]);
    else if (strcmp(argv[i], "--http-cache") == 0 && i + 1 < argc) {
      const char *m = argv[++i];
      go.http_cache = strcmp(m, "max_age") == 0 ? PERFC_HTTP_CACHE_MAX_AGE
                      : strcmp(m, "off") == 0   ? PERFC_HTTP_CACHE_OFF
                                                : PERFC_HTTP_CACHE_REVALIDATE;
    } else if (strcmp(argv[i], "--redis-port") == 0 && i + 1 < argc)
      redis_port = atoi(argv[++i]);
    else {
      fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  go.cors_origins = cors;
  go.cors_origin_count = ncors;
  /* The notes' cache: L1, and Redis as L2 when given (then GetNote's
   * misses read Redis on the loop, as a real service's do). */
  perfc_redis_pool *redis = NULL;
  if (redis_port > 0) {
    perfc_redis_opts ro;
    perfc_redis_opts_init(&ro);
    ro.host = "127.0.0.1";
    ro.port = redis_port;
    if (perfc_redis_pool_new(&redis, &ro) != 0) {
      fprintf(stderr, "redis failed: %s\n", perfc_last_error());
      return 1;
    }
  }
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.redis = redis;
  co.name = "notes";
  perfc_cache *cache = NULL;
  if (perfc_cache_new(&cache, &co) != 0) {
    fprintf(stderr, "cache failed: %s\n", perfc_last_error());
    return 1;
  }
  perfc_server *srv;
  int port = 0;
  if (perfc_server_new(&srv, &o) != 0 ||
      web__v1__web__perfc_register_cached(srv, &handlers, NULL, cache) != 0 ||
      perfc_gateway_attach(&go, srv) != 0 ||
      (tls.cert_file != NULL ? perfc_server_listen_tls(srv, listen, &tls, &port)
                             : perfc_server_listen(srv, listen, &port)) != 0) {
    fprintf(stderr, "setup failed: %s\n", perfc_last_error());
    return 1;
  }
  perfc_ratelimit_rule rule = {.method = "/web.v1.Web/Limited", .rate = 2,
                               .burst = 2};
  perfc_ratelimit_opts ro;
  perfc_ratelimit_opts_init(&ro);
  ro.rules = &rule;
  ro.rule_count = 1;
  static const char secret[] = "perfc-http-test-secret-0123456789abcdef";
  perfc_auth_rule arules[] = {{.method = "*", .is_public = true},
                              {.method = "/web.v1.Web/DeleteThing"}};
  perfc_auth_opts ao;
  perfc_auth_opts_init(&ao);
  ao.hs256_secret = (const uint8_t *)secret;
  ao.hs256_secret_len = sizeof secret - 1;
  ao.rules = arules;
  ao.rule_count = 2;
  perfc_auth *auth = NULL;
  if (perfc_auth_new(&auth, &ao) != 0 || perfc_auth_attach(auth, srv) != 0) {
    fprintf(stderr, "auth failed: %s\n", perfc_last_error());
    return 1;
  }
  perfc_ratelimit *rl = NULL;
  perfc_grpc_metrics *gm = NULL;
  perfc_metrics_http *mh = NULL;
  perfc_metrics_http_opts mo;
  perfc_metrics_http_opts_init(&mo);
  mo.addr = "127.0.0.1:0";
  if (perfc_grpc_metrics_new(&gm, NULL) != 0 ||
      perfc_grpc_metrics_attach(gm, srv) != 0 ||
      perfc_ratelimit_new(&rl, &ro) != 0 || perfc_ratelimit_attach(rl, srv) != 0 ||
      perfc_server_start(srv) != 0 || perfc_metrics_http_start(&mh, &mo) != 0) {
    fprintf(stderr, "start failed: %s\n", perfc_last_error());
    return 1;
  }
  char host[128];
  snprintf(host, sizeof host, "%s", listen);
  char *colon = strrchr(host, ':');
  if (colon)
    *colon = '\0';
  printf("listening on %s:%d\n", host, port);
  printf("metrics on 127.0.0.1:%d\n", perfc_metrics_http_port(mh));
  fflush(stdout);
  perfc_server_run(srv);
  perfc_metrics_http_stop(mh);
  perfc_server_free(srv);
  perfc_grpc_metrics_free(gm);
  perfc_ratelimit_free(rl);
  perfc_auth_free(auth);
  perfc_cache_free(cache);
  perfc_redis_pool_free(redis);
  return 0;
}
