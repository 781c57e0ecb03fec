/*
 * timeouts.c — per-method default timeouts: a call whose client set no
 * deadline, or a later one than the method allows, gets the method's
 * timeout as its deadline.
 *
 * Room: runtime/src/guard. A server interceptor over perfc/interceptor.h and the
 * server's perfc_ctx_set_deadline_ms(). The timeout of each method is worked
 * out once in method_init and stored in the method-state pointer itself
 * (a boxed int64), so `before` costs one clock read and one compare.
 */
#include "perfc/timeouts.h"
#include "core/error_internal.h"
#include "perfc/server.h"
#include "server/server_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct rule {
  char *method;
  size_t prefix; /* a service-wide "/pkg.Svc/": its length, else 0 */
  int64_t timeout_ms;
} rule;

struct perfc_timeouts {
  rule *rules;
  size_t nrules;
  int64_t default_ms;
  perfc_server_interceptor ic;
};

void perfc_timeouts_opts_init(perfc_timeouts_opts *o) {
  memset(o, 0, sizeof *o);
}

static int rule_matches(const rule *r, const char *path) {
  if (r->prefix)
    return strncmp(path, r->method, r->prefix) == 0;
  return strcmp(path, r->method) == 0;
}

int64_t perfc_timeouts_for(const perfc_timeouts *t,
                           const perfc_service_desc *svc,
                           const perfc_method_desc *m) {
  (void)svc;
  if (t == NULL || m == NULL)
    return 0;
  /* Configuration beats the proto option, which beats the default: config
   * is what an operator changes without rebuilding. */
  for (size_t i = 0; i < t->nrules; i++)
    if (m->path != NULL && rule_matches(&t->rules[i], m->path))
      return t->rules[i].timeout_ms;
  if (m->timeout_ms > 0)
    return m->timeout_ms;
  return t->default_ms;
}

static void *method_init(void *self, const perfc_service_desc *svc,
                         const perfc_method_desc *m) {
  int64_t ms = perfc_timeouts_for(self, svc, m);
  if (ms <= 0)
    return NULL; /* no timeout: `before` sees NULL and does nothing */
  int64_t *box = malloc(sizeof *box);
  if (box != NULL)
    *box = ms;
  return box;
}

static void method_free(void *self, void *state) {
  (void)self;
  free(state);
}

static perfc_status_code before(void *self, void *state, perfc_ctx *ctx,
                                void **call_state) {
  (void)self;
  (void)call_state;
  if (state == NULL)
    return PERFC_STATUS_OK;
  /* The timeout runs from the call's arrival, not from this hook, so time
   * spent in earlier interceptors counts against it. */
  int64_t spent_ms = (perfc__now_ns() - perfc_ctx_start_ns(ctx)) / 1000000;
  int64_t left = *(const int64_t *)state - spent_ms;
  perfc_ctx_set_deadline_ms(ctx, left > 0 ? left : 0);
  return PERFC_STATUS_OK;
}

int perfc_timeouts_new(perfc_timeouts **out, const perfc_timeouts_opts *opts) {
  if (out == NULL)
    return perfc__fail(PERFC_EINVAL, "timeouts: NULL out");
  perfc_timeouts_opts o;
  perfc_timeouts_opts_init(&o);
  if (opts != NULL)
    o = *opts; /* whole: nothing here has a zero default to fill */
  if (o.default_timeout_enabled ? o.default_timeout_ms <= 0
                                : o.default_timeout_ms != 0)
    return perfc__fail(PERFC_EINVAL,
                       "timeouts: default_timeout_ms %lld with "
                       "default_timeout_enabled %s",
                       (long long)o.default_timeout_ms,
                       o.default_timeout_enabled ? "true (needs > 0)"
                                                 : "false (needs 0)");
  if (o.rule_count > 0 && o.rules == NULL)
    return perfc__fail(PERFC_EINVAL, "timeouts: %zu rules but no array",
                       o.rule_count);
  for (size_t i = 0; i < o.rule_count; i++) {
    const perfc_timeouts_rule *r = &o.rules[i];
    if (r->method == NULL || r->method[0] != '/')
      return perfc_error_set(PERFC_EINVAL, NULL, (long)i,
                             "timeouts: rule %zu: method %s%s%s does not "
                             "start with '/'",
                             i, r->method ? "\"" : "",
                             r->method ? r->method : "NULL",
                             r->method ? "\"" : "");
    if (r->no_timeout ? r->timeout_ms != 0 : r->timeout_ms <= 0)
      return perfc_error_set(PERFC_EINVAL, NULL, (long)i,
                             "timeouts: rule %zu (%s): timeout_ms %lld with "
                             "no_timeout %s",
                             i, r->method, (long long)r->timeout_ms,
                             r->no_timeout ? "true (needs 0)"
                                           : "false (needs > 0)");
  }
  perfc_timeouts *t = calloc(1, sizeof *t);
  if (t == NULL)
    return perfc__fail(PERFC_ENOMEM, "timeouts: out of memory");
  if (o.rule_count > 0 &&
      (t->rules = calloc(o.rule_count, sizeof *t->rules)) == NULL) {
    free(t);
    return perfc__fail(PERFC_ENOMEM, "timeouts: out of memory");
  }
  for (size_t i = 0; i < o.rule_count; i++) {
    rule *r = &t->rules[t->nrules++];
    if ((r->method = strdup(o.rules[i].method)) == NULL) {
      perfc_timeouts_free(t);
      return perfc__fail(PERFC_ENOMEM, "timeouts: out of memory");
    }
    size_t n = strlen(r->method);
    if (r->method[n - 1] == '/')
      r->prefix = n;
    /* Inside: 0 is "none" (perfc_timeouts_for() reports it so). */
    r->timeout_ms = o.rules[i].no_timeout ? 0 : o.rules[i].timeout_ms;
  }
  t->default_ms = o.default_timeout_enabled ? o.default_timeout_ms : 0;
  t->ic = (perfc_server_interceptor){
      .name = "timeouts",
      .self = t,
      .method_init = method_init,
      .method_free = method_free,
      .before = before,
  };
  *out = t;
  return 0;
}

int perfc_timeouts_attach(perfc_timeouts *t, perfc_server *srv) {
  if (t == NULL)
    return perfc__fail(PERFC_EINVAL, "timeouts: attach needs the interceptor");
  return perfc_server_add_interceptor(srv, &t->ic);
}

void perfc_timeouts_free(perfc_timeouts *t) {
  if (t == NULL)
    return;
  for (size_t i = 0; i < t->nrules; i++)
    free(t->rules[i].method);
  free(t->rules);
  free(t);
}
