/*
 * client.c — channels (a pool of N distinct connections) and unary calls,
 * synchronous, asynchronous, and completed on the caller's event loop
 * (perfc_channel_unary_on_loop, at the end of this file) (streams:
 * client_stream.c; TLS channels: client_tls.c).
 *
 * Room: runtime/src/client. Owns the grpc_channels and grpc_calls it creates;
 * calls core/ (arena, log, threads) and transport/core (grpc_util) only.
 *
 * A synchronous call uses its own pluck-type completion queue, as grpc's C++
 * BlockingUnaryCall does: one batch carries all six unary ops, so the call
 * costs one queue round trip and shares nothing with other threads except
 * the channel's round-robin counter.
 */
#include "perfc/client.h"
#include "perfc/log.h"
#include "client/client_internal.h"

#include "transport/core/compression_internal.h"
#include "core/error_internal.h"
#include "core/pb_wire_internal.h"
#include "core/thread_internal.h"

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

void perfc_channel_opts_init(perfc_channel_opts *o) {
  memset(o, 0, sizeof *o);
  o->connections = PERFC_DEFAULT_CHANNEL_CONNECTIONS;
  /* keepalive_time_ms stays 0 (the default once keepalive_enabled): an
   * interval written without the switch is then refused, not ignored. */
  o->keepalive_timeout_ms = PERFC_DEFAULT_KEEPALIVE_TIMEOUT_MS;
  o->max_recv_message_bytes = PERFC_DEFAULT_MAX_RECV_MESSAGE_BYTES;
  o->max_send_message_bytes = PERFC_DEFAULT_MAX_SEND_MESSAGE_BYTES;
  o->default_timeout_ms = PERFC_DEFAULT_CALL_TIMEOUT_MS;
  o->min_reconnect_backoff_ms = PERFC_DEFAULT_MIN_RECONNECT_BACKOFF_MS;
  o->max_reconnect_backoff_ms = PERFC_DEFAULT_MAX_RECONNECT_BACKOFF_MS;
  o->connect_timeout_ms = PERFC_DEFAULT_CONNECT_TIMEOUT_MS;
}

/* Checks a duration the core takes as an int channel argument. */
static int check_int_ms(const char *field, int64_t v) {
  if (v < 0 || v > PERFC_CHANNEL_MAX_INT_ARG)
    return perfc__fail(PERFC_EINVAL,
                       "channel: %s %lld out of range (0 to %d ms: the "
                       "core's channel arguments are int milliseconds)",
                       field, (long long)v, PERFC_CHANNEL_MAX_INT_ARG);
  return 0;
}

/* Checks a message size; `no` is its no_*_limit switch. */
static int check_msg_bytes(const char *field, const char *no, size_t v) {
  if (v > (size_t)PERFC_CHANNEL_MAX_INT_ARG)
    return perfc__fail(PERFC_EINVAL,
                       "channel: %s %zu above %d (the core's int); %s = true "
                       "for no limit",
                       field, v, PERFC_CHANNEL_MAX_INT_ARG, no);
  return 0;
}

/* Every channel option, after zeros became defaults: 0 or PERFC_EINVAL
 * with the field named in perfc_last_error(). */
static int check_channel_opts(const perfc_channel_opts *o) {
  int rc;
  if (!o->keepalive_enabled && o->keepalive_time_ms != 0)
    return perfc__fail(PERFC_EINVAL,
                       "channel: keepalive_time_ms %lld without "
                       "keepalive_enabled (set both, or neither)",
                       (long long)o->keepalive_time_ms);
  if (!o->keepalive_enabled && o->keepalive_permit_without_calls)
    return perfc__fail(PERFC_EINVAL,
                       "channel: keepalive_permit_without_calls without "
                       "keepalive_enabled");
  if ((rc = check_int_ms("keepalive_time_ms", o->keepalive_time_ms)) != 0 ||
      (rc = check_int_ms("keepalive_timeout_ms", o->keepalive_timeout_ms)) !=
          0 ||
      (rc = check_int_ms("min_reconnect_backoff_ms",
                         o->min_reconnect_backoff_ms)) != 0 ||
      (rc = check_int_ms("max_reconnect_backoff_ms",
                         o->max_reconnect_backoff_ms)) != 0 ||
      (rc = check_int_ms("connect_timeout_ms", o->connect_timeout_ms)) != 0)
    return rc;
  if (o->min_reconnect_backoff_ms > o->max_reconnect_backoff_ms)
    return perfc__fail(PERFC_EINVAL,
                       "channel: min_reconnect_backoff_ms %lld above "
                       "max_reconnect_backoff_ms %lld",
                       (long long)o->min_reconnect_backoff_ms,
                       (long long)o->max_reconnect_backoff_ms);
  if ((rc = check_msg_bytes("max_recv_message_bytes", "no_recv_message_limit",
                            o->max_recv_message_bytes)) != 0 ||
      (rc = check_msg_bytes("max_send_message_bytes", "no_send_message_limit",
                            o->max_send_message_bytes)) != 0)
    return rc;
  if (o->default_timeout_ms < 0)
    return perfc__fail(PERFC_EINVAL,
                       "channel: default_timeout_ms %lld is negative "
                       "(no_default_timeout = true for no deadline)",
                       (long long)o->default_timeout_ms);
  grpc_compression_algorithm calgo;
  if (perfc__compression_parse(o->compression, &calgo) != 0)
    return perfc__fail(PERFC_EINVAL,
                       "channel: compression \"%s\" unknown (gzip, deflate, "
                       "identity)",
                       o->compression);
  if (o->interceptor_count > PERFC_MAX_INTERCEPTORS)
    return perfc__fail(PERFC_EINVAL,
                       "channel: interceptor_count %zu above %d "
                       "(PERFC_MAX_INTERCEPTORS)",
                       o->interceptor_count, PERFC_MAX_INTERCEPTORS);
  for (size_t i = 0; i < o->interceptor_count; i++)
    if (o->interceptors == NULL || o->interceptors[i] == NULL)
      return perfc__fail(PERFC_EINVAL,
                         "channel: interceptors[%zu] is NULL "
                         "(interceptor_count %zu)",
                         i, o->interceptor_count);
  for (size_t i = 0; i < o->retry_service_count; i++)
    if (o->retry_services == NULL || o->retry_services[i] == NULL)
      return perfc__fail(PERFC_EINVAL,
                         "channel: retry_services[%zu] is NULL "
                         "(retry_service_count %zu)",
                         i, o->retry_service_count);
  if (o->lb_policy != NULL && strcmp(o->lb_policy, "pick_first") != 0 &&
      strcmp(o->lb_policy, "round_robin") != 0)
    return perfc__fail(PERFC_EINVAL,
                       "channel: lb_policy \"%s\" unknown (pick_first, "
                       "round_robin)",
                       o->lb_policy);
  return 0;
}

/* A growable string for the service config JSON. */
typedef struct sbuf {
  char *p;
  size_t n, cap;
  int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s) {
  size_t len = strlen(s);
  if (b->oom)
    return;
  if (b->n + len + 1 > b->cap) {
    size_t cap = (b->n + len + 1) * 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, len + 1);
  b->n += len;
}

/* The service config perfc derives from the options: the load-balancing
 * policy and a retry policy for idempotent methods. Returns "" when there is
 * nothing to say, NULL on OOM. Names come from generated descriptors (proto
 * identifiers), so they need no JSON escaping. */
static char *build_service_config(const perfc_channel_opts *o) {
  sbuf b = {0};
  sb_add(&b, "");
  int any = 0;
  size_t idempotent = 0;
  for (size_t i = 0; i < o->retry_service_count; i++)
    for (size_t k = 0; k < o->retry_services[i]->n_methods; k++)
      idempotent += o->retry_services[i]->methods[k].idempotent != 0;
  unsigned attempts = o->retry_max_attempts ? o->retry_max_attempts
                                            : PERFC_DEFAULT_RETRY_MAX_ATTEMPTS;
  if (o->lb_policy == NULL && (idempotent == 0 || attempts < 2))
    return b.p;
  sb_add(&b, "{");
  if (o->lb_policy != NULL) {
    sb_add(&b, "\"loadBalancingConfig\":[{\"");
    sb_add(&b, o->lb_policy);
    sb_add(&b, "\":{}}]");
    any = 1;
  }
  if (idempotent > 0 && attempts >= 2) {
    char num[16];
    snprintf(num, sizeof num, "%u", attempts > 5 ? 5 : attempts);
    sb_add(&b, any ? ",\"methodConfig\":[{\"name\":[" : "\"methodConfig\":[{\"name\":[");
    int first = 1;
    for (size_t i = 0; i < o->retry_service_count; i++) {
      const perfc_service_desc *sv = o->retry_services[i];
      for (size_t k = 0; k < sv->n_methods; k++) {
        if (!sv->methods[k].idempotent)
          continue;
        sb_add(&b, first ? "{\"service\":\"" : ",{\"service\":\"");
        sb_add(&b, sv->name);
        sb_add(&b, "\",\"method\":\"");
        sb_add(&b, sv->methods[k].name);
        sb_add(&b, "\"}");
        first = 0;
      }
    }
    /* Backoff 50 ms doubling to 1 s with grpc's built-in jitter; only
     * UNAVAILABLE, which means the request did not reach a handler. */
    sb_add(&b, "],\"retryPolicy\":{\"maxAttempts\":");
    sb_add(&b, num);
    sb_add(&b, ",\"initialBackoff\":\"0.05s\",\"maxBackoff\":\"1s\","
               "\"backoffMultiplier\":2,\"retryableStatusCodes\":[\"UNAVAILABLE\"]}}]");
  }
  sb_add(&b, "}");
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  return b.p;
}

/* An xds: target makes the core read its bootstrap only when the
 * resolver starts: without one the channel stays in TRANSIENT_FAILURE and
 * a call says "Failed to create XdsClient: ... not defined", or, for a
 * GRPC_XDS_BOOTSTRAP that cannot be read, only "Failed to load file"
 * (which file?); a wait_for_ready call just waits for its deadline. The
 * same conditions are checked here, so perfc_channel_new() fails at once
 * with a message naming the variables and the file. The bootstrap's
 * content is left to the core (it names what it finds wrong). */
static int check_xds_bootstrap(const char *target) {
  if (strncmp(target, "xds:", 4) != 0)
    return 0;
  const char *file = getenv("GRPC_XDS_BOOTSTRAP");
  const char *json = getenv("GRPC_XDS_BOOTSTRAP_CONFIG");
  if ((file == NULL || file[0] == '\0') && (json == NULL || json[0] == '\0'))
    return perfc__fail(PERFC_EINVAL,
                       "channel: target \"%s\" needs an xDS bootstrap: set "
                       "GRPC_XDS_BOOTSTRAP to the bootstrap file's path or "
                       "GRPC_XDS_BOOTSTRAP_CONFIG to its JSON (neither is "
                       "set)",
                       target);
  /* The core prefers the file when both are set. */
  if (file != NULL && file[0] != '\0' && access(file, R_OK) != 0)
    return perfc__fail(PERFC_EINVAL,
                       "channel: target \"%s\": the xDS bootstrap file "
                       "GRPC_XDS_BOOTSTRAP=%s cannot be read: %s",
                       target, file, strerror(errno));
  return 0;
}

/* Plaintext and TLS channels differ only in `creds` (borrowed) and the
 * optional TLS host name override (client_tls.c calls this too). */
int perfc__channel_new(perfc_channel **out, const char *target,
                       const perfc_channel_opts *opts,
                       grpc_channel_credentials *creds,
                       const char *name_override) {
  if (out == NULL)
    return perfc__fail(PERFC_EINVAL, "channel: out is NULL");
  if (target == NULL || target[0] == '\0')
    return perfc__fail(PERFC_EINVAL, "channel: no target");
  int xrc = check_xds_bootstrap(target);
  if (xrc != 0)
    return xrc;
  /* Copied whole, then zeros become defaults, then everything is checked
   * (docs/design.md, "API style"): no hand-kept list of fields that a new
   * one could miss. */
  perfc_channel_opts o, d;
  perfc_channel_opts_init(&d);
  o = opts != NULL ? *opts : d;
#define DEFAULT(f)                                                             \
  if (!o.f)                                                                    \
  o.f = d.f
  DEFAULT(connections);
  DEFAULT(keepalive_timeout_ms);
  DEFAULT(max_recv_message_bytes);
  DEFAULT(max_send_message_bytes);
  DEFAULT(default_timeout_ms);
  DEFAULT(min_reconnect_backoff_ms);
  DEFAULT(max_reconnect_backoff_ms);
  DEFAULT(connect_timeout_ms);
#undef DEFAULT
  int rc = check_channel_opts(&o);
  if (rc != 0)
    return rc;
  if (o.keepalive_enabled && o.keepalive_time_ms == 0)
    o.keepalive_time_ms = PERFC_DEFAULT_CLIENT_KEEPALIVE_TIME_MS;
  grpc_compression_algorithm calgo = GRPC_COMPRESS_NONE;
  (void)perfc__compression_parse(o.compression, &calgo); /* checked above */
  /* The core's "unlimited" for a message size is -1. */
  int recv_arg = o.no_recv_message_limit ? -1 : (int)o.max_recv_message_bytes;
  int send_arg = o.no_send_message_limit ? -1 : (int)o.max_send_message_bytes;

  perfc_channel *ch = calloc(1, sizeof *ch);
  if (ch == NULL)
    return PERFC_ENOMEM;
  ch->n = o.connections;
  ch->chans = calloc(ch->n, sizeof *ch->chans);
  ch->target = strdup(target);
  if (ch->chans == NULL || ch->target == NULL) {
    free(ch->chans);
    free(ch->target);
    free(ch);
    return perfc__fail(PERFC_ENOMEM, "channel: out of memory");
  }
  ch->default_timeout_ms = o.no_default_timeout ? -1 : o.default_timeout_ms;
  ch->recv_max = o.no_recv_message_limit ? SIZE_MAX : o.max_recv_message_bytes;
  pthread_mutex_init(&ch->async_mu, NULL);
  pthread_cond_init(&ch->async_cv, NULL);
  atomic_init(&ch->next, 0);
  for (size_t i = 0; i < o.interceptor_count; i++)
    ch->ics[ch->nics++] = o.interceptors[i];

  char *service_config = NULL;
  const char *sc = o.service_config_json;
  if (sc == NULL) {
    service_config = build_service_config(&o);
    if (service_config == NULL) {
      free(ch->chans);
      free(ch->target);
      free(ch);
      return perfc__fail(PERFC_ENOMEM, "channel: out of memory");
    }
    sc = service_config[0] ? service_config : NULL;
  }

  perfc__grpc_init();
  for (unsigned i = 0; i < ch->n; i++) {
    grpc_arg args[16];
    size_t n = 0;
#define INT_ARG(k, v)                                                          \
  args[n].type = GRPC_ARG_INTEGER;                                             \
  args[n].key = (char *)(k);                                                   \
  args[n].value.integer = (v);                                                 \
  n++
    if (o.keepalive_enabled) {
      INT_ARG(GRPC_ARG_KEEPALIVE_TIME_MS, (int)o.keepalive_time_ms);
      INT_ARG(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, (int)o.keepalive_timeout_ms);
      INT_ARG(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
              o.keepalive_permit_without_calls ? 1 : 0);
      /* Without this the core stops pinging after two pings with no data,
       * and keepalive would not detect a dead idle connection. */
      INT_ARG(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    }
    INT_ARG(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, recv_arg);
    INT_ARG(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, send_arg);
    /* Despite its name, the core reads GRPC_ARG_MIN_RECONNECT_BACKOFF_MS as
     * the minimum connect timeout (MIN_CONNECT_TIMEOUT in grpc's
     * connection-backoff.md); the first retry delay is the INITIAL arg. */
    INT_ARG(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, (int)o.connect_timeout_ms);
    INT_ARG(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
            (int)o.min_reconnect_backoff_ms);
    INT_ARG(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
            (int)o.max_reconnect_backoff_ms);
    /* Channels with identical target, credentials and args share one TCP
     * connection through the global subchannel pool. A local pool plus a
     * distinct index makes each of the N channels its own connection. */
    INT_ARG(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    /* Retries only happen where the service config asks for them. */
    INT_ARG(GRPC_ARG_ENABLE_RETRIES, 1);
    INT_ARG("perfc.channel_index", (int)i);
    if (calgo != GRPC_COMPRESS_NONE) {
      INT_ARG(GRPC_COMPRESSION_CHANNEL_DEFAULT_ALGORITHM, (int)calgo);
    }
    /* perfc inflates compressed responses itself, bounded by
     * max_recv_message_bytes: the core would inflate a whole message before
     * checking its size, so a hostile server could make a 1 MiB answer
     * allocate 1 GiB here (server.c says more). */
    INT_ARG(GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0);
#undef INT_ARG
    if (name_override != NULL) {
      args[n].type = GRPC_ARG_STRING;
      args[n].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
      args[n].value.string = (char *)name_override;
      n++;
    }
    if (sc != NULL) {
      args[n].type = GRPC_ARG_STRING;
      args[n].key = (char *)GRPC_ARG_SERVICE_CONFIG;
      args[n].value.string = (char *)sc;
      n++;
    }
    grpc_channel_args ca = {.num_args = n, .args = args};
    /* The core's threads started here leave SIGINT/SIGTERM to the
     * application's threads (core/thread_internal.h). */
    sigset_t sigs;
    perfc__stop_signals_block(&sigs);
    ch->chans[i] = grpc_channel_create(target, creds, &ca);
    perfc__stop_signals_restore(&sigs);
  }
  free(service_config);
  *out = ch;
  return 0;
}

int perfc_channel_new(perfc_channel **out, const char *target,
                      const perfc_channel_opts *opts) {
  /* Credentials are core objects: create and release them inside a
   * grpc_init reference, as the TLS path does. */
  perfc__grpc_init();
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  int rc = perfc__channel_new(out, target, opts, creds, NULL);
  grpc_channel_credentials_release(creds);
  grpc_shutdown();
  return rc;
}

void perfc_channel_free(perfc_channel *ch) {
  if (ch == NULL)
    return;
  /* Outstanding async calls end by their deadline at the latest; their
   * callbacks must run before the queue goes away. */
  pthread_mutex_lock(&ch->async_mu);
  ch->closing = 1;
  while (ch->outstanding > 0)
    pthread_cond_wait(&ch->async_cv, &ch->async_mu);
  pthread_mutex_unlock(&ch->async_mu);
  for (unsigned i = 0; i < ch->npollers; i++) {
    perfc__async_poller *p = &ch->pollers[i];
    grpc_completion_queue_shutdown(p->cq);
    pthread_join(p->thread, NULL);
    grpc_completion_queue_destroy(p->cq);
    perfc_arena_free(p->arena);
  }
  free(ch->pollers);
  pthread_cond_destroy(&ch->async_cv);
  pthread_mutex_destroy(&ch->async_mu);
  for (unsigned i = 0; i < ch->n; i++)
    if (ch->chans[i] != NULL)
      grpc_channel_destroy(ch->chans[i]);
  free(ch->chans);
  free(ch->target);
  free(ch);
  grpc_shutdown();
}

static perfc_status_code set_status(perfc_status *st, perfc_status_code code,
                                    const char *msg, size_t len) {
  if (st != NULL) {
    st->code = code;
    free(st->message);
    st->message = NULL;
    if (msg != NULL && len > 0) {
      st->message = malloc(len + 1);
      if (st->message != NULL) {
        memcpy(st->message, msg, len);
        st->message[len] = '\0';
      }
    }
  }
  return code;
}

static perfc_status_code do_unary(perfc_channel *ch, const perfc_method_desc *m,
                                   const ProtobufCMessage *req,
                                   ProtobufCMessage **resp,
                                   const perfc_call_opts *opts,
                                   perfc_status *status) {
  if (req->descriptor != m->input) {
    char e[256];
    int n = snprintf(e, sizeof e, "%s expects %s, got %s", m->path,
                     m->input->name, req->descriptor->name);
    return set_status(status, PERFC_STATUS_INVALID_ARGUMENT, e, (size_t)n);
  }

  grpc_metadata md_stack[8];
  grpc_metadata *md = md_stack;
  size_t md_count = 0;
  char mderr[160];
  if (perfc__call_metadata(opts, md_stack, 8, 0, &md, &md_count, mderr,
                           sizeof mderr) != 0)
    return set_status(status, PERFC_STATUS_INVALID_ARGUMENT, mderr,
                      strlen(mderr));

  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  perfc__cancel_watch watch;
  grpc_call *call = perfc__create_call(ch, m, cq, opts, &watch);
  grpc_byte_buffer *send_bb = perfc__pack(req);
  grpc_byte_buffer *recv_bb = NULL;
  grpc_metadata_array initial_md, trailing_md;
  grpc_metadata_array_init(&initial_md);
  grpc_metadata_array_init(&trailing_md);
  grpc_status_code code = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();

  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = md_count;
  ops[0].data.send_initial_metadata.metadata = md;
  ops[0].flags = perfc__initial_md_flags(opts);
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send_bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &recv_bb;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
  ops[5].data.recv_status_on_client.status = &code;
  ops[5].data.recv_status_on_client.status_details = &details;

  perfc_status_code result;
  PERFC_HANDOFF_RELEASE(&ops[0]);
  grpc_call_error err = grpc_call_start_batch(call, ops, 6, &ops[0], NULL);
  if (err != GRPC_CALL_OK) {
    const char *e = grpc_call_error_to_string(err);
    result = set_status(status, PERFC_STATUS_INTERNAL, e, strlen(e));
  } else {
    grpc_completion_queue_pluck(cq, &ops[0], gpr_inf_future(GPR_CLOCK_REALTIME),
                                NULL);
    PERFC_HANDOFF_ACQUIRE(&ops[0]);
    result = (perfc_status_code)code;
    if (code == GRPC_STATUS_OK) {
      const uint8_t *data = NULL;
      size_t len = 0;
      perfc_arena *tmp = NULL;
      int rc = PERFC_EPARSE;
      char why[256] = "";
      if (recv_bb != NULL) {
        /* Without a caller arena, a multi-slice response is flattened into a
         * scratch arena freed below; the message itself is malloc'd. */
        perfc_arena *a = opts->arena;
        if (a == NULL && perfc_arena_new(&tmp, 0) == 0)
          a = tmp;
        rc = a ? perfc__byte_buffer_flatten(recv_bb, ch->recv_max, a, &data,
                                            &len)
               : PERFC_ENOMEM;
      }
      if (rc == 0) {
        ProtobufCAllocator al;
        ProtobufCAllocator *alp = NULL;
        if (opts->arena != NULL) {
          al = perfc_arena_allocator(opts->arena);
          alp = &al;
        }
        *resp = perfc__pb_unpack(m->output, m->strings, alp, len, data, why,
                                 sizeof why);
      }
      perfc_arena_free(tmp);
      if (rc == PERFC_ETOOBIG) {
        char e[200];
        int n = snprintf(e, sizeof e,
                         "%s: response inflates past the %zu-byte receive limit",
                         m->path, ch->recv_max);
        result = set_status(status, PERFC_STATUS_RESOURCE_EXHAUSTED, e,
                            (size_t)n);
      } else if (*resp == NULL) {
        char e[400];
        if (why[0])
          snprintf(e, sizeof e, "%s: response refused: %s", m->path, why);
        else
          snprintf(e, sizeof e,
                   recv_bb ? "%s: response does not parse as %s"
                           : "%s: server sent OK without a %s message",
                   m->path, m->output->name);
        result = set_status(status, PERFC_STATUS_INTERNAL, e, strlen(e));
      } else {
        set_status(status, PERFC_STATUS_OK, NULL, 0);
      }
    } else {
      /* The core wrote the details on whichever thread polled the
       * connection and handed them over through its own locks, invisible
       * to TSan (see PERFC_CORE_READS_BEGIN): only this read is exempt. */
      PERFC_CORE_READS_BEGIN();
      set_status(status, result, (const char *)GRPC_SLICE_START_PTR(details),
                 GRPC_SLICE_LENGTH(details));
      PERFC_CORE_READS_END();
    }
  }

  /* The core filled these on whichever thread polled the connection (see
   * PERFC_CORE_MEMORY_BEGIN): giving them back is not a race. */
  PERFC_CORE_MEMORY_BEGIN();
  grpc_slice_unref(details);
  grpc_metadata_array_destroy(&initial_md);
  grpc_metadata_array_destroy(&trailing_md);
  if (recv_bb != NULL)
    grpc_byte_buffer_destroy(recv_bb);
  grpc_byte_buffer_destroy(send_bb);
  PERFC_CORE_MEMORY_END();
  perfc__ctx_unwatch(&watch);
  grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_destroy(cq);
  perfc__call_metadata_free(md, md_count, md_stack);
  return result;
}

perfc_status_code perfc_channel_unary(perfc_channel *ch,
                                      const perfc_method_desc *m,
                                      const ProtobufCMessage *req,
                                      ProtobufCMessage **resp,
                                      const perfc_call_opts *opts,
                                      perfc_status *status) {
  static const perfc_call_opts no_opts;
  if (opts == NULL)
    opts = &no_opts;
  if (resp != NULL)
    *resp = NULL;
  if (ch == NULL || m == NULL || req == NULL || resp == NULL) {
    const char *e = "perfc_channel_unary: NULL argument";
    return set_status(status, PERFC_STATUS_INVALID_ARGUMENT, e, strlen(e));
  }
  if (ch->nics == 0)
    return do_unary(ch, m, req, resp, opts, status);

  /* Interceptors need the status even when the caller passed none. */
  perfc_status local = {0};
  perfc_status *st = status ? status : &local;
  void *state[PERFC_MAX_INTERCEPTORS] = {0};
  size_t entered = 0;
  int64_t t0 = perfc__now_ns();
  perfc_status_code code = perfc__ic_before(ch, m, state, &entered);
  if (code != PERFC_STATUS_OK) {
    const char *e = "refused by a client interceptor";
    set_status(st, code, e, strlen(e));
  } else {
    perfc__ic_message(ch, m, state, entered, 1);
    perfc_call_opts eff_tmp;
    perfc_metadata eff_buf[16];
    const perfc_call_opts *eff = perfc__ic_outgoing(ch, m, opts, state, entered,
                                                    &eff_tmp, eff_buf, 16);
    code = do_unary(ch, m, req, resp, eff, st);
    perfc__ic_outgoing_free(eff, opts, eff_buf);
    if (code == PERFC_STATUS_OK)
      perfc__ic_message(ch, m, state, entered, 0);
  }
  perfc__ic_after(ch, m, state, entered, code, perfc__now_ns() - t0);
  perfc_status_reset(&local);
  return code;
}

perfc_status_code perfc__ic_before(perfc_channel *ch, const perfc_method_desc *m,
                                   void **state, size_t *entered) {
  *entered = 0;
  for (size_t i = 0; i < ch->nics; i++) {
    const perfc_client_interceptor *ic = ch->ics[i];
    *entered = i + 1;
    if (ic->before) {
      perfc_status_code c = ic->before(ic->self, m, &state[i]);
      if (c != PERFC_STATUS_OK)
        return c;
    }
  }
  return PERFC_STATUS_OK;
}

void perfc__ic_message(perfc_channel *ch, const perfc_method_desc *m,
                       void **state, size_t entered, int sent) {
  for (size_t i = 0; i < entered; i++)
    if (ch->ics[i]->on_message)
      ch->ics[i]->on_message(ch->ics[i]->self, m, state[i], sent);
}

void perfc__ic_after(perfc_channel *ch, const perfc_method_desc *m,
                     void **state, size_t entered, perfc_status_code code,
                     int64_t elapsed_ns) {
  for (size_t i = entered; i-- > 0;)
    if (ch->ics[i]->after)
      ch->ics[i]->after(ch->ics[i]->self, m, state[i], code, elapsed_ns);
}

const perfc_call_opts *perfc__ic_outgoing(perfc_channel *ch,
                                          const perfc_method_desc *m,
                                          const perfc_call_opts *opts,
                                          void **state, size_t entered,
                                          perfc_call_opts *tmp,
                                          perfc_metadata *buf, size_t buflen) {
  perfc_metadata add[PERFC_MAX_INTERCEPTORS * PERFC_CLIENT_IC_MAX_METADATA];
  size_t nadd = 0;
  perfc_client_call_info info = {.method = m, .parent = opts->parent,
                                 .target = ch->target};
  for (size_t i = 0; i < entered; i++) {
    const perfc_client_interceptor *ic = ch->ics[i];
    if (ic->outgoing_metadata == NULL)
      continue;
    size_t n = ic->outgoing_metadata(ic->self, &info, &state[i], add + nadd,
                                     PERFC_CLIENT_IC_MAX_METADATA);
    nadd += n < PERFC_CLIENT_IC_MAX_METADATA ? n : PERFC_CLIENT_IC_MAX_METADATA;
  }
  if (nadd == 0)
    return opts;
  size_t total = opts->metadata_count + nadd;
  perfc_metadata *md = total <= buflen ? buf : malloc(total * sizeof *md);
  if (md == NULL)
    return opts; /* documented: the call goes on without the additions */
  if (opts->metadata_count > 0)
    memcpy(md, opts->metadata, opts->metadata_count * sizeof *md);
  memcpy(md + opts->metadata_count, add, nadd * sizeof *md);
  *tmp = *opts;
  tmp->metadata = md;
  tmp->metadata_count = total;
  return tmp;
}

void perfc__ic_outgoing_free(const perfc_call_opts *eff,
                             const perfc_call_opts *opts, perfc_metadata *buf) {
  if (eff != opts && eff->metadata != buf)
    free((void *)eff->metadata);
}

void perfc__ic_outgoing_md(perfc_channel *ch, const perfc_method_desc *m,
                           const perfc_call_opts *opts, void **state,
                           size_t entered, grpc_metadata **md, size_t *nmd,
                           grpc_metadata *stack) {
  perfc_call_opts tmp;
  perfc_metadata buf[16];
  const perfc_call_opts *eff =
      perfc__ic_outgoing(ch, m, opts, state, entered, &tmp, buf, 16);
  if (eff == opts)
    return;
  /* Built apart (no stack array) and swapped in only when it succeeded, so
   * a failure leaves the call with the caller's metadata. */
  grpc_metadata *nm;
  size_t nn;
  char err[160];
  if (perfc__call_metadata(eff, NULL, 0, 1, &nm, &nn, err, sizeof err) == 0) {
    perfc__call_metadata_free(*md, *nmd, stack);
    *md = nm;
    *nmd = nn;
  } else {
    perfc_log(PERFC_LOG_DEBUG, "client: interceptor metadata dropped: %s", err);
  }
  perfc__ic_outgoing_free(eff, opts, buf);
}

/* ---- helpers shared with client_stream.c ----------------------------------- */

int perfc__call_metadata(const perfc_call_opts *opts, grpc_metadata *stack,
                         size_t stack_len, int copy, grpc_metadata **out,
                         size_t *count, char *err, size_t errlen) {
  grpc_metadata *md = stack;
  *out = stack;
  *count = 0;
  /* The options are checked here because every call path builds its
   * metadata first, before anything reaches the core. */
  if (opts->timeout_ms < 0) {
    snprintf(err, errlen,
             "timeout_ms %lld is negative (no_timeout = true for no deadline)",
             (long long)opts->timeout_ms);
    return PERFC_EINVAL;
  }
  if (opts->no_timeout && opts->timeout_ms != 0) {
    snprintf(err, errlen, "no_timeout with timeout_ms %lld: set one of them",
             (long long)opts->timeout_ms);
    return PERFC_EINVAL;
  }
  if (opts->metadata_count > 0 && opts->metadata == NULL) {
    snprintf(err, errlen, "metadata is NULL with metadata_count %zu",
             opts->metadata_count);
    return PERFC_EINVAL;
  }
  grpc_compression_algorithm calgo = GRPC_COMPRESS_NONE;
  if (opts->compression != NULL &&
      perfc__compression_parse(opts->compression, &calgo) != 0) {
    snprintf(err, errlen, "unknown compression '%.40s' (gzip, deflate, identity)",
             opts->compression);
    return PERFC_EINVAL;
  }
  size_t total = opts->metadata_count + (opts->compression != NULL);
  if (total > stack_len) {
    md = calloc(total, sizeof *md);
    if (md == NULL) {
      snprintf(err, errlen, "out of memory");
      return PERFC_ENOMEM;
    }
  }
  /* Checked here because the core would fail the whole batch with an
   * opaque error. Without `copy`, slices borrow the caller's strings, which
   * is right only while the caller blocks until the call ends. */
  for (size_t i = 0; i < opts->metadata_count; i++) {
    const perfc_metadata *in = &opts->metadata[i];
    size_t vlen = in->value_len ? in->value_len
                                : (in->value ? strlen(in->value) : 0);
    if (perfc__check_metadata(in->key, in->value, vlen) != 0) {
      snprintf(err, errlen, "invalid request metadata key or value '%.60s'",
               in->key ? in->key : "(null)");
      perfc__call_metadata_free(md, i, stack);
      return PERFC_EINVAL;
    }
    memset(&md[i], 0, sizeof md[i]);
    if (copy) {
      md[i].key = grpc_slice_from_copied_string(in->key);
      md[i].value = grpc_slice_from_copied_buffer(in->value, vlen);
    } else {
      md[i].key = grpc_slice_from_static_string(in->key);
      md[i].value = grpc_slice_from_static_buffer(in->value, vlen);
    }
  }
  if (opts->compression != NULL) {
    /* The per-call override the core's compression filter reads (grpc's
     * C++ ClientContext::set_compression_algorithm sends the same key); the
     * filter removes it before anything goes on the wire. It wins over the
     * channel default, and "identity" turns compression off for this call.
     * The name is a static string of the core's. */
    const char *name = "identity";
    grpc_compression_algorithm_name(calgo, &name);
    grpc_metadata *c = &md[opts->metadata_count];
    memset(c, 0, sizeof *c);
    c->key = grpc_slice_from_static_string("grpc-internal-encoding-request");
    c->value = grpc_slice_from_static_string(name);
  }
  *out = md;
  *count = total;
  return 0;
}

void perfc__call_metadata_free(grpc_metadata *md, size_t n,
                               grpc_metadata *stack) {
  /* Unref is a no-op for static slices, so one path serves both modes. */
  for (size_t i = 0; i < n; i++) {
    grpc_slice_unref(md[i].key);
    grpc_slice_unref(md[i].value);
  }
  if (md != stack)
    free(md);
}

static void cancel_child(void *call) {
  grpc_call_cancel_with_status(call, GRPC_STATUS_CANCELLED,
                               "the server call this call was made from was "
                               "cancelled",
                               NULL);
}

grpc_call *perfc__create_call(perfc_channel *ch, const perfc_method_desc *m,
                              grpc_completion_queue *cq,
                              const perfc_call_opts *opts,
                              perfc__cancel_watch *watch) {
  /* A call without its own timeout takes the method's (perfc.method).timeout,
   * as options.proto promises, else the channel's default. Negative is
   * "none" from here on (perfc__deadline_from_ms), never from a user. */
  int64_t timeout = opts->no_timeout      ? -1
                    : opts->timeout_ms    ? opts->timeout_ms
                    : m->timeout_ms > 0   ? m->timeout_ms
                                          : ch->default_timeout_ms;
  /* The core propagates the parent call's deadline as the client sent it;
   * a server-side lowering (perfc_ctx_set_deadline_ms) lives only in the
   * context, so it is applied here. */
  if (opts->parent != NULL) {
    int64_t left = perfc_ctx_remaining_ms(opts->parent);
    if (left != INT64_MAX && (timeout < 0 || left < timeout))
      timeout = left;
  }
  gpr_timespec deadline = perfc__deadline_from_ms(timeout);
  unsigned idx = atomic_fetch_add_explicit(&ch->next, 1, memory_order_relaxed);
  grpc_channel *gch = ch->chans[idx % ch->n];
  /* With a parent, the core takes the earlier deadline and cancels this
   * call when the parent is cancelled (GRPC_PROPAGATE_DEFAULTS). */
  grpc_call *parent = opts->parent ? perfc__ctx_call(opts->parent) : NULL;
  grpc_call *call = grpc_channel_create_call(
      gch, parent, GRPC_PROPAGATE_DEFAULTS, cq,
      grpc_slice_from_static_string(m->path), NULL, deadline, NULL);
  /* Whatever transport carries the parent (h2 has no grpc_call to hand the
   * core), the call layer cancels this call with it: a reset or lost
   * client, the parent's deadline, the end of the shutdown grace. */
  watch->ctx = NULL;
  if (opts->parent != NULL &&
      perfc__ctx_watch(opts->parent, watch, cancel_child, call) != 0)
    cancel_child(call);
  return call;
}

uint32_t perfc__initial_md_flags(const perfc_call_opts *opts) {
  return opts->wait_for_ready
             ? GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                   GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET
             : 0;
}

/* ---- asynchronous unary calls ----------------------------------------------- */

typedef struct async_call {
  perfc_tag tag; /* first: the queue hands us back this pointer */
  perfc_channel *ch;
  perfc__async_poller *poller;
  const perfc_method_desc *m;
  perfc_unary_cb cb;
  void *user_data;
  grpc_call *call;
  perfc__cancel_watch watch; /* the parent's cancel (opts->parent) */
  grpc_metadata md_stack[8];
  grpc_metadata *md;
  size_t nmd;
  grpc_byte_buffer *send_bb, *recv_bb;
  grpc_metadata_array initial_md, trailing_md;
  grpc_status_code code;
  grpc_slice details;
  void *ic_state[PERFC_MAX_INTERCEPTORS];
  size_t ic_entered;
  int64_t t0;
  /* Completed on a loop (perfc_channel_unary_on_loop) when `box` is set;
   * the flags and links are the box's, under its lock. */
  struct loop_box *box;
  perfc_call_done_fn done;
  perfc_arena *arena;           /* opts->arena, or NULL: the box's scratch */
  struct async_call *next, *prev;
  perfc_status_code local;      /* failed before reaching the core */
  int ok;                       /* the batch's success flag */
  int core_done;                /* the core completed the batch */
  int orphan;                   /* its loop stopped first */
  int cb_ran;                   /* an orphan's callback ran */
} async_call;

static void box_complete(async_call *a, int ok);

static void *async_poller(void *arg) {
  perfc__async_poller *p = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        p->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      return NULL;
    if (ev.type == GRPC_OP_COMPLETE) {
      perfc_tag *t = ev.tag;
      PERFC_HANDOFF_ACQUIRE(t);
      t->run(t, ev.success);
    }
  }
}

static void async_done(perfc_tag *t, int ok) {
  async_call *a = PERFC_CONTAINER_OF(t, async_call, tag);
  if (a->box != NULL) {
    box_complete(a, ok); /* the rest happens on its loop */
    return;
  }
  perfc_channel *ch = a->ch;
  perfc_status_code code = ok ? (perfc_status_code)a->code : PERFC_STATUS_INTERNAL;
  char message[512];
  const char *msg = NULL;
  ProtobufCMessage *resp = NULL;
  if (code == PERFC_STATUS_OK) {
    /* The response lives in this poller's arena, valid during the callback
     * only (as documented): no malloc per completion. */
    perfc_arena *arena = a->poller->arena;
    perfc_arena_reset(arena);
    const uint8_t *data = NULL;
    size_t len = 0;
    ProtobufCAllocator al = perfc_arena_allocator(arena);
    char why[256] = "";
    int rc = a->recv_bb != NULL
                 ? perfc__byte_buffer_flatten(a->recv_bb, ch->recv_max, arena,
                                              &data, &len)
                 : PERFC_EPARSE;
    if (rc == 0)
      resp = perfc__pb_unpack(a->m->output, a->m->strings, &al, len, data, why,
                              sizeof why);
    if (rc == PERFC_ETOOBIG) {
      code = PERFC_STATUS_RESOURCE_EXHAUSTED;
      snprintf(message, sizeof message,
               "%s: response inflates past the %zu-byte receive limit",
               a->m->path, ch->recv_max);
      msg = message;
    } else if (resp == NULL && why[0]) {
      code = PERFC_STATUS_INTERNAL;
      snprintf(message, sizeof message, "%s: response refused: %s",
               a->m->path, why);
      msg = message;
    } else if (resp == NULL) {
      code = PERFC_STATUS_INTERNAL;
      snprintf(message, sizeof message, "%s: response missing or not a %s",
               a->m->path, a->m->output->name);
      msg = message;
    }
  } else if (GRPC_SLICE_LENGTH(a->details) > 0) {
    PERFC_CORE_READS_BEGIN(); /* the core's details, as in do_unary */
    snprintf(message, sizeof message, "%.*s", (int)GRPC_SLICE_LENGTH(a->details),
             (const char *)GRPC_SLICE_START_PTR(a->details));
    PERFC_CORE_READS_END();
    msg = message;
  }
  if (code == PERFC_STATUS_OK)
    perfc__ic_message(ch, a->m, a->ic_state, a->ic_entered, 0);
  perfc__ic_after(ch, a->m, a->ic_state, a->ic_entered, code,
                  perfc__now_ns() - a->t0);
  a->cb(code, msg, resp, a->user_data);

  PERFC_CORE_MEMORY_BEGIN(); /* as in do_unary */
  grpc_slice_unref(a->details);
  grpc_metadata_array_destroy(&a->initial_md);
  grpc_metadata_array_destroy(&a->trailing_md);
  if (a->recv_bb != NULL)
    grpc_byte_buffer_destroy(a->recv_bb);
  grpc_byte_buffer_destroy(a->send_bb);
  PERFC_CORE_MEMORY_END();
  perfc__call_metadata_free(a->md, a->nmd, a->md_stack);
  perfc__ctx_unwatch(&a->watch);
  grpc_call_unref(a->call);
  free(a);
  pthread_mutex_lock(&ch->async_mu);
  if (--ch->outstanding == 0)
    pthread_cond_broadcast(&ch->async_cv);
  pthread_mutex_unlock(&ch->async_mu);
}

static void *poller_setup(void *ud, unsigned i, pthread_t **thread) {
  perfc_channel *ch = ud;
  perfc__async_poller *p = &ch->pollers[i];
  p->ch = ch;
  if (perfc_arena_new(&p->arena, 0) != 0)
    return NULL;
  p->cq = grpc_completion_queue_create_for_next(NULL);
  *thread = &p->thread;
  return p;
}

static void poller_undo(void *ud, unsigned i) {
  perfc__async_poller *p = &((perfc_channel *)ud)->pollers[i];
  grpc_completion_queue_shutdown(p->cq);
  grpc_completion_queue_destroy(p->cq);
  perfc_arena_free(p->arena);
}

/* Starts the pollers, one per core (at most 8): a completion unpacks the
 * response and runs the callback, so one thread would cap a busy client. */
static int start_pollers(perfc_channel *ch) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned n = cores < 1 ? 1 : cores > 8 ? 8 : (unsigned)cores;
  ch->pollers = calloc(n, sizeof *ch->pollers);
  if (ch->pollers == NULL)
    return PERFC_ENOMEM;
  perfc__thread_spec spec = {.name = "perfc-client",
                             .main = async_poller,
                             .setup = poller_setup,
                             .undo = poller_undo,
                             .user_data = ch};
  ch->npollers = perfc__threads_start(&spec, n);
  if (ch->npollers == 0) {
    free(ch->pollers);
    ch->pollers = NULL;
    return PERFC_ETHREAD;
  }
  return 0;
}

/* Registers one more outstanding call, starting the pollers on first use,
 * and picks the poller for it. */
static int async_enter(perfc_channel *ch, perfc__async_poller **out) {
  int rc = 0;
  pthread_mutex_lock(&ch->async_mu);
  if (ch->closing)
    rc = PERFC_ESHUTDOWN;
  else if (ch->npollers == 0)
    rc = start_pollers(ch);
  if (rc == 0)
    ch->outstanding++;
  pthread_mutex_unlock(&ch->async_mu);
  if (rc == 0) {
    unsigned i = atomic_fetch_add_explicit(&ch->next_poller, 1,
                                           memory_order_relaxed);
    *out = &ch->pollers[i % ch->npollers];
  }
  return rc;
}

static void async_leave(perfc_channel *ch) {
  pthread_mutex_lock(&ch->async_mu);
  if (--ch->outstanding == 0)
    pthread_cond_broadcast(&ch->async_cv);
  pthread_mutex_unlock(&ch->async_mu);
}

int perfc_channel_unary_async(perfc_channel *ch, const perfc_method_desc *m,
                              const ProtobufCMessage *req,
                              const perfc_call_opts *opts, perfc_unary_cb cb,
                              void *user_data) {
  static const perfc_call_opts no_opts;
  if (opts == NULL)
    opts = &no_opts;
  if (ch == NULL || m == NULL || req == NULL || cb == NULL)
    return perfc__fail(PERFC_EINVAL, "unary_async: NULL %s",
                       ch == NULL  ? "channel"
                       : m == NULL ? "method"
                       : req == NULL ? "request"
                                     : "callback");
  if (req->descriptor != m->input)
    return perfc__fail(PERFC_EINVAL, "%s expects %s, got %s", m->path,
                       m->input->name, req->descriptor->name);
  async_call *a = calloc(1, sizeof *a);
  if (a == NULL)
    return perfc__fail(PERFC_ENOMEM, "%s: out of memory", m->path);
  char err[160];
  int rc = perfc__call_metadata(opts, a->md_stack, 8, 1, &a->md, &a->nmd, err,
                                sizeof err);
  if (rc != 0) {
    free(a);
    return perfc__fail(rc, "%s: %s", m->path, err);
  }
  rc = async_enter(ch, &a->poller);
  if (rc != 0) {
    perfc__call_metadata_free(a->md, a->nmd, a->md_stack);
    free(a);
    return perfc__fail(rc, "%s: %s", m->path,
                       rc == PERFC_ESHUTDOWN ? "channel being freed"
                       : rc == PERFC_ETHREAD ? "cannot start a poller thread"
                                             : "out of memory");
  }
  a->ch = ch;
  a->m = m;
  a->cb = cb;
  a->user_data = user_data;
  a->tag.run = async_done;
  a->t0 = perfc__now_ns();
  perfc_status_code refused = perfc__ic_before(ch, m, a->ic_state, &a->ic_entered);
  if (refused != PERFC_STATUS_OK) {
    /* Reported through the callback, like any other failed call, but from
     * this thread: the call never reached the queue. */
    perfc__ic_after(ch, m, a->ic_state, a->ic_entered, refused, 0);
    cb(refused, "refused by a client interceptor", NULL, user_data);
    perfc__call_metadata_free(a->md, a->nmd, a->md_stack);
    free(a);
    async_leave(ch);
    return 0;
  }
  perfc__ic_outgoing_md(ch, m, opts, a->ic_state, a->ic_entered, &a->md,
                        &a->nmd, a->md_stack);
  perfc__ic_message(ch, m, a->ic_state, a->ic_entered, 1);
  a->call = perfc__create_call(ch, m, a->poller->cq, opts, &a->watch);
  a->send_bb = perfc__pack(req);
  grpc_metadata_array_init(&a->initial_md);
  grpc_metadata_array_init(&a->trailing_md);
  a->details = grpc_empty_slice();
  a->code = GRPC_STATUS_UNKNOWN;

  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = a->nmd;
  ops[0].data.send_initial_metadata.metadata = a->md;
  ops[0].flags = perfc__initial_md_flags(opts);
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = a->send_bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &a->initial_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &a->recv_bb;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &a->trailing_md;
  ops[5].data.recv_status_on_client.status = &a->code;
  ops[5].data.recv_status_on_client.status_details = &a->details;
  grpc_call *call = a->call;
  PERFC_HANDOFF_RELEASE(&a->tag);
  if (grpc_call_start_batch(call, ops, 6, &a->tag, NULL) != GRPC_CALL_OK) {
    /* Cannot happen with a well-formed batch; fail through the callback. */
    a->code = GRPC_STATUS_INTERNAL;
    async_done(&a->tag, 0);
  }
  return 0;
}

/* ---- unary calls completed on a loop ---------------------------------------- *
 *
 * perfc_channel_unary_on_loop(): the batch runs on the channel's pollers as
 * for perfc_channel_unary_async(), but a completion only hands the call to
 * its loop's mailbox (a `loop_box`, one per loop, shared by every channel)
 * and wakes the loop through the box's eventfd; the response is unpacked
 * and the callback runs on the loop. Why an eventfd of our own and not a
 * posted perfc_loop_task: a posted task must run before it is freed, and a
 * loop may stop with one queued; the box's descriptor is simply closed
 * when its loop stops, so nothing of ours is left in a stopped loop.
 *
 * Lifetimes. A box is a loop-local value (perfc/loop.h) created at the
 * loop's first call; it holds one reference for the loop and one per call
 * tied to it. Its on_exit (the loop stops) delivers every completed call,
 * cancels those still in flight and runs their callbacks with CANCELLED
 * there ("orphans"); the core's completion of an orphan, later, on a
 * poller, then only releases it. A call is released (core objects,
 * channel count) once both the core completed it and its callback ran.
 */

typedef struct loop_box {
  pthread_mutex_t mu;
  int refs;          /* the loop (until its on_exit) + calls tied to it */
  int efd;           /* eventfd the pollers write; -1 once the loop stopped */
  int wake_pending;  /* efd written since the loop last read it */
  async_call *done_head, *done_tail; /* completed, not yet delivered */
  async_call *live;  /* in the core (doubly linked) */
  /* Loop thread only. */
  perfc_loop *loop;
  perfc_loop_io *io;
  perfc_arena *scratch; /* responses of calls without an arena, per callback */
} loop_box;

static const char box_key; /* the boxes' loop-local key */
/* The loop whose box is ending on this thread: calls started from the
 * orphans' callbacks are refused there rather than making a new box that
 * the same stop would end again. */
static _Thread_local perfc_loop *box_ending;

static void box_unref(loop_box *b) {
  pthread_mutex_lock(&b->mu);
  int last = --b->refs == 0;
  pthread_mutex_unlock(&b->mu);
  if (last) {
    pthread_mutex_destroy(&b->mu);
    free(b);
  }
}

/* Under b->mu. */
static void box_push_done(loop_box *b, async_call *a) {
  a->next = NULL;
  if (b->done_tail != NULL)
    b->done_tail->next = a;
  else
    b->done_head = a;
  b->done_tail = a;
  if (!b->wake_pending && b->efd >= 0) {
    b->wake_pending = 1;
    uint64_t one = 1;
    /* Cannot fail short of a counter overflow the reads prevent. */
    while (write(b->efd, &one, sizeof one) < 0 && errno == EINTR)
      ;
  }
}

static void box_unlink_live(loop_box *b, async_call *a) {
  if (a->prev != NULL)
    a->prev->next = a->next;
  else
    b->live = a->next;
  if (a->next != NULL)
    a->next->prev = a->prev;
  a->next = a->prev = NULL;
}

/* Everything a loop call holds, once the core and the callback are both
 * done with it. Any thread. */
static void loop_call_release(async_call *a) {
  perfc_channel *ch = a->ch;
  loop_box *b = a->box;
  grpc_slice_unref(a->details);
  grpc_metadata_array_destroy(&a->initial_md);
  grpc_metadata_array_destroy(&a->trailing_md);
  if (a->recv_bb != NULL)
    grpc_byte_buffer_destroy(a->recv_bb);
  if (a->send_bb != NULL)
    grpc_byte_buffer_destroy(a->send_bb);
  perfc__call_metadata_free(a->md, a->nmd, a->md_stack);
  perfc__ctx_unwatch(&a->watch);
  if (a->call != NULL)
    grpc_call_unref(a->call);
  free(a);
  box_unref(b);
  async_leave(ch);
}

/* A poller: the core completed the batch. */
static void box_complete(async_call *a, int ok) {
  loop_box *b = a->box;
  int release = 0;
  pthread_mutex_lock(&b->mu);
  a->ok = ok;
  a->core_done = 1;
  if (a->orphan) {
    release = a->cb_ran;
  } else {
    box_unlink_live(b, a);
    box_push_done(b, a);
  }
  pthread_mutex_unlock(&b->mu);
  if (release)
    loop_call_release(a);
}

/* Core metadata as perfc_metadata in `arena` (NUL-terminated copies). */
static const perfc_metadata *md_to_perfc(perfc_arena *arena,
                                         const grpc_metadata_array *in,
                                         size_t *n) {
  *n = 0;
  if (in->count == 0)
    return NULL;
  perfc_metadata *out = perfc_arena_alloc(arena, in->count * sizeof *out);
  if (out == NULL)
    return NULL;
  for (size_t i = 0; i < in->count; i++) {
    const grpc_metadata *md = &in->metadata[i];
    char *k = perfc_arena_strndup(arena,
                                  (const char *)GRPC_SLICE_START_PTR(md->key),
                                  GRPC_SLICE_LENGTH(md->key));
    char *v = perfc_arena_strndup(arena,
                                  (const char *)GRPC_SLICE_START_PTR(md->value),
                                  GRPC_SLICE_LENGTH(md->value));
    if (k == NULL || v == NULL)
      return *n ? out : NULL; /* what fitted: the arena ran out */
    out[*n] = (perfc_metadata){.key = k, .value = v,
                               .value_len = GRPC_SLICE_LENGTH(md->value)};
    ++*n;
  }
  return out;
}

/* Loop thread: runs the callback of `a` (`orphan`: its loop stops before
 * the reply came). */
static void loop_call_deliver(async_call *a, int orphan) {
  perfc_channel *ch = a->ch;
  loop_box *b = a->box;
  /* Before the callback, which may finish the parent call. */
  perfc__ctx_unwatch(&a->watch);
  perfc_arena *arena = a->arena;
  if (arena == NULL) {
    arena = b->scratch;
    perfc_arena_reset(arena);
  }
  perfc_call_result r = {.code = PERFC_STATUS_OK};
  char message[512];
  ProtobufCMessage *resp = NULL;
  if (orphan) {
    r.code = PERFC_STATUS_CANCELLED;
    snprintf(message, sizeof message,
             "%s: the event loop stopped before the reply", a->m->path);
    r.message = message;
  } else if (a->local != PERFC_STATUS_OK) {
    r.code = a->local;
    snprintf(message, sizeof message, "%s: %s", a->m->path,
             a->call != NULL ? "the core refused the batch"
                             : "refused by a client interceptor");
    r.message = message;
  } else {
    r.code = a->ok ? (perfc_status_code)a->code : PERFC_STATUS_INTERNAL;
    r.headers = md_to_perfc(arena, &a->initial_md, &r.header_count);
    r.trailers = md_to_perfc(arena, &a->trailing_md, &r.trailer_count);
    if (r.code == PERFC_STATUS_OK) {
      const uint8_t *data = NULL;
      size_t len = 0;
      ProtobufCAllocator al = perfc_arena_allocator(arena);
      char why[256] = "";
      int rc = a->recv_bb != NULL
                   ? perfc__byte_buffer_flatten(a->recv_bb, ch->recv_max, arena,
                                                &data, &len)
                   : PERFC_EPARSE;
      if (rc == 0)
        resp = perfc__pb_unpack(a->m->output, a->m->strings, &al, len, data,
                                why, sizeof why);
      if (rc == PERFC_ETOOBIG) {
        r.code = PERFC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(message, sizeof message,
                 "%s: response inflates past the %zu-byte receive limit",
                 a->m->path, ch->recv_max);
        r.message = message;
      } else if (resp == NULL) {
        r.code = PERFC_STATUS_INTERNAL;
        if (why[0])
          snprintf(message, sizeof message, "%s: response refused: %s",
                   a->m->path, why);
        else
          snprintf(message, sizeof message,
                   a->recv_bb ? "%s: response does not parse as %s"
                              : "%s: server sent OK without a %s message",
                   a->m->path, a->m->output->name);
        r.message = message;
      }
    } else if (!a->ok) {
      snprintf(message, sizeof message, "%s: the call's batch failed",
               a->m->path);
      r.message = message;
    } else if (GRPC_SLICE_LENGTH(a->details) > 0) {
      PERFC_CORE_READS_BEGIN(); /* the core's details, as in do_unary */
      snprintf(message, sizeof message, "%.*s",
               (int)GRPC_SLICE_LENGTH(a->details),
               (const char *)GRPC_SLICE_START_PTR(a->details));
      PERFC_CORE_READS_END();
      r.message = message;
    }
  }
  r.response = resp;
  if (r.code == PERFC_STATUS_OK)
    perfc__ic_message(ch, a->m, a->ic_state, a->ic_entered, 0);
  perfc__ic_after(ch, a->m, a->ic_state, a->ic_entered, r.code,
                  perfc__now_ns() - a->t0);
  a->done(&r, a->user_data);
}

/* The box's eventfd: completions are waiting. */
static void box_on_io(perfc_loop_io *io, unsigned events, void *ud) {
  (void)io;
  (void)events;
  loop_box *b = ud;
  uint64_t v;
  while (read(b->efd, &v, sizeof v) < 0 && errno == EINTR)
    ;
  pthread_mutex_lock(&b->mu);
  /* Cleared with the list taken: a completion after this writes again. */
  b->wake_pending = 0;
  async_call *a = b->done_head;
  b->done_head = b->done_tail = NULL;
  pthread_mutex_unlock(&b->mu);
  /* A callback may stop the loop; the rest are still delivered here, and
   * the box's own end comes later, when the loop returns. */
  while (a != NULL) {
    async_call *next = a->next;
    loop_call_deliver(a, 0);
    loop_call_release(a);
    a = next;
  }
}

/* The loop stops (its loop-local on_exit, on its thread). */
static void box_end(void *ud) {
  loop_box *b = ud;
  perfc_loop *prev = box_ending;
  box_ending = b->loop;
  pthread_mutex_lock(&b->mu);
  async_call *done = b->done_head, *live = b->live;
  b->done_head = b->done_tail = NULL;
  b->live = NULL;
  for (async_call *a = live; a != NULL; a = a->next) {
    a->orphan = 1;
    /* Under the lock: the poller frees an orphan only after its callback
     * ran, which is below. The completion lands on the channel's queue,
     * never inline. */
    grpc_call_cancel_with_status(a->call, GRPC_STATUS_CANCELLED,
                                 "the caller's event loop stopped", NULL);
  }
  /* No completion writes it any more: every call left is an orphan. */
  close(b->efd);
  b->efd = -1;
  pthread_mutex_unlock(&b->mu);
  perfc_loop_io_free(b->io);
  b->io = NULL;
  while (done != NULL) {
    async_call *next = done->next;
    loop_call_deliver(done, 0);
    loop_call_release(done);
    done = next;
  }
  while (live != NULL) {
    async_call *next = live->next; /* read before the poller may free it */
    loop_call_deliver(live, 1);
    pthread_mutex_lock(&b->mu);
    live->cb_ran = 1;
    int release = live->core_done;
    pthread_mutex_unlock(&b->mu);
    if (release)
      loop_call_release(live);
    live = next;
  }
  perfc_arena_free(b->scratch);
  b->scratch = NULL;
  box_ending = prev;
  box_unref(b);
}

/* The calling loop's box, made at its first call. */
static int box_get(perfc_loop *loop, loop_box **out) {
  loop_box *b = perfc_loop_local_get(loop, &box_key);
  if (b != NULL) {
    *out = b;
    return 0;
  }
  b = calloc(1, sizeof *b);
  if (b == NULL)
    return perfc__fail(PERFC_ENOMEM, "unary_on_loop: out of memory");
  b->loop = loop;
  b->refs = 1;
  pthread_mutex_init(&b->mu, NULL);
  b->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (b->efd < 0) {
    int e = errno;
    pthread_mutex_destroy(&b->mu);
    free(b);
    return perfc__fail(PERFC_EIO, "unary_on_loop: eventfd: %s", strerror(e));
  }
  int rc = perfc_arena_new(&b->scratch, 0);
  if (rc == 0)
    rc = perfc_loop_io_new(&b->io, loop, b->efd, box_on_io, b);
  if (rc == 0)
    rc = perfc_loop_io_set(b->io, PERFC_LOOP_READ);
  if (rc == 0)
    rc = perfc_loop_local_set(loop, &box_key, b, box_end);
  if (rc != 0) {
    perfc_loop_io_free(b->io);
    perfc_arena_free(b->scratch);
    close(b->efd);
    pthread_mutex_destroy(&b->mu);
    free(b);
    return perfc__fail(rc, "unary_on_loop: cannot attach to the loop");
  }
  *out = b;
  return 0;
}

int perfc_channel_unary_on_loop(perfc_channel *ch, const perfc_method_desc *m,
                                const ProtobufCMessage *req,
                                const perfc_call_opts *opts, perfc_loop *loop,
                                perfc_call_done_fn cb, void *user_data) {
  static const perfc_call_opts no_opts;
  if (opts == NULL)
    opts = &no_opts;
  if (ch == NULL || m == NULL || req == NULL || cb == NULL)
    return perfc__fail(PERFC_EINVAL, "unary_on_loop: NULL %s",
                       ch == NULL    ? "channel"
                       : m == NULL   ? "method"
                       : req == NULL ? "request"
                                     : "callback");
  perfc_loop *here = perfc_loop_current();
  if (loop == NULL)
    loop = here;
  if (loop == NULL || loop != here)
    return perfc__fail(PERFC_EINVAL,
                       "%s: %s (call from the loop's own thread: an inline "
                       "handler on h2 or a loop callback; elsewhere use "
                       "perfc_channel_unary_async)",
                       m->path,
                       here == NULL ? "this thread runs no event loop"
                                    : "the loop is not this thread's");
  if (box_ending == loop)
    return perfc__fail(PERFC_ESHUTDOWN, "%s: the event loop is stopping",
                       m->path);
  if (req->descriptor != m->input)
    return perfc__fail(PERFC_EINVAL, "%s expects %s, got %s", m->path,
                       m->input->name, req->descriptor->name);
  async_call *a = calloc(1, sizeof *a);
  if (a == NULL)
    return perfc__fail(PERFC_ENOMEM, "%s: out of memory", m->path);
  char err[160];
  int rc = perfc__call_metadata(opts, a->md_stack, 8, 1, &a->md, &a->nmd, err,
                                sizeof err);
  if (rc != 0) {
    free(a);
    return perfc__fail(rc, "%s: %s", m->path, err);
  }
  loop_box *b = NULL;
  rc = box_get(loop, &b);
  if (rc == 0) {
    rc = async_enter(ch, &a->poller);
    if (rc != 0)
      rc = perfc__fail(rc, "%s: %s", m->path,
                       rc == PERFC_ESHUTDOWN ? "channel being freed"
                       : rc == PERFC_ETHREAD ? "cannot start a poller thread"
                                             : "out of memory");
  }
  if (rc != 0) {
    perfc__call_metadata_free(a->md, a->nmd, a->md_stack);
    free(a);
    return rc;
  }
  pthread_mutex_lock(&b->mu);
  b->refs++;
  pthread_mutex_unlock(&b->mu);
  a->box = b;
  a->ch = ch;
  a->m = m;
  a->done = cb;
  a->user_data = user_data;
  a->arena = opts->arena;
  a->tag.run = async_done;
  a->t0 = perfc__now_ns();
  grpc_metadata_array_init(&a->initial_md);
  grpc_metadata_array_init(&a->trailing_md);
  a->details = grpc_empty_slice();
  a->code = GRPC_STATUS_UNKNOWN;
  a->watch.ctx = NULL;
  perfc_status_code refused = perfc__ic_before(ch, m, a->ic_state, &a->ic_entered);
  if (refused != PERFC_STATUS_OK) {
    /* Reported on the loop like any other end, never from in here. */
    a->local = refused;
    pthread_mutex_lock(&b->mu);
    a->core_done = 1;
    box_push_done(b, a);
    pthread_mutex_unlock(&b->mu);
    return 0;
  }
  perfc__ic_outgoing_md(ch, m, opts, a->ic_state, a->ic_entered, &a->md,
                        &a->nmd, a->md_stack);
  perfc__ic_message(ch, m, a->ic_state, a->ic_entered, 1);
  a->call = perfc__create_call(ch, m, a->poller->cq, opts, &a->watch);
  a->send_bb = perfc__pack(req);

  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = a->nmd;
  ops[0].data.send_initial_metadata.metadata = a->md;
  ops[0].flags = perfc__initial_md_flags(opts);
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = a->send_bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &a->initial_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &a->recv_bb;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &a->trailing_md;
  ops[5].data.recv_status_on_client.status = &a->code;
  ops[5].data.recv_status_on_client.status_details = &a->details;
  /* Listed before the batch starts: its completion may come at once. */
  pthread_mutex_lock(&b->mu);
  a->next = b->live;
  if (b->live != NULL)
    b->live->prev = a;
  b->live = a;
  pthread_mutex_unlock(&b->mu);
  grpc_call *call = a->call;
  PERFC_HANDOFF_RELEASE(&a->tag);
  if (grpc_call_start_batch(call, ops, 6, &a->tag, NULL) != GRPC_CALL_OK) {
    /* Cannot happen with a well-formed batch; reported on the loop. */
    pthread_mutex_lock(&b->mu);
    box_unlink_live(b, a);
    a->local = PERFC_STATUS_INTERNAL;
    a->core_done = 1;
    box_push_done(b, a);
    pthread_mutex_unlock(&b->mu);
  }
  return 0;
}
