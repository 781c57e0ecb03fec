/*
 * client.c — channels (a pool of N distinct connections) and synchronous
 * unary calls.
 *
 * Room: runtime/src. Owns the grpc_channels and grpc_calls it creates; calls
 * arena, log and grpc_util only.
 *
 * A synchronous call uses its own pluck-type completion queue, as grpc's C++
 * BlockingUnaryCall does: one batch carries all six unary ops, so the call
 * costs one queue round trip and shares nothing with other threads except
 * the channel's round-robin counter.
 */
#include "perfc/client.h"
#include "perfc/log.h"
#include "server_internal.h"

#include "compression_internal.h"
#include "tls_internal.h"

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct perfc_channel {
  unsigned n;
  grpc_channel **chans;
  atomic_uint next;
  int64_t default_timeout_ms;
  char *target;
  const perfc_client_interceptor *ics[PERFC_MAX_INTERCEPTORS];
  size_t nics;
};

void perfc_channel_opts_init(perfc_channel_opts *o) {
  memset(o, 0, sizeof *o);
  o->connections = 1;
  o->keepalive_time_ms = PERFC_DEFAULT_CLIENT_KEEPALIVE_TIME_MS;
  o->keepalive_timeout_ms = PERFC_DEFAULT_KEEPALIVE_TIMEOUT_MS;
  o->max_recv_message_bytes = PERFC_DEFAULT_MAX_RECV_MESSAGE_BYTES;
  o->max_send_message_bytes = PERFC_DEFAULT_MAX_SEND_MESSAGE_BYTES;
  o->default_timeout_ms = PERFC_DEFAULT_CALL_TIMEOUT_MS;
  o->min_reconnect_backoff_ms = PERFC_DEFAULT_MIN_RECONNECT_BACKOFF_MS;
  o->max_reconnect_backoff_ms = PERFC_DEFAULT_MAX_RECONNECT_BACKOFF_MS;
}

static int clamp_int(int64_t v) { return v > INT32_MAX ? INT32_MAX : (int)v; }

/* Plaintext and TLS channels differ only in `creds` (borrowed) and the
 * optional TLS host name override. */
static int channel_new(perfc_channel **out, const char *target,
                       const perfc_channel_opts *opts,
                       grpc_channel_credentials *creds,
                       const char *name_override) {
  if (out == NULL || target == NULL || target[0] == '\0')
    return PERFC_EINVAL;
  perfc_channel_opts o;
  perfc_channel_opts_init(&o);
  if (opts != NULL) {
#define TAKE(f)                                                                \
  if (opts->f)                                                                 \
  o.f = opts->f
    TAKE(connections);
    TAKE(keepalive_time_ms);
    TAKE(keepalive_timeout_ms);
    TAKE(keepalive_permit_without_calls);
    TAKE(max_recv_message_bytes);
    TAKE(max_send_message_bytes);
    TAKE(default_timeout_ms);
    TAKE(min_reconnect_backoff_ms);
    TAKE(max_reconnect_backoff_ms);
    TAKE(lb_policy);
    TAKE(service_config_json);
    TAKE(interceptors);
    TAKE(interceptor_count);
    TAKE(compression);
#undef TAKE
  }
  grpc_compression_algorithm calgo;
  if (perfc__compression_parse(o.compression, &calgo) != 0) {
    perfc_log(PERFC_LOG_ERROR,
              "channel: unknown compression \"%s\" (gzip, deflate, identity)",
              o.compression);
    return PERFC_EINVAL;
  }
  if (o.interceptor_count > PERFC_MAX_INTERCEPTORS ||
      (o.interceptor_count > 0 && o.interceptors == NULL))
    return PERFC_EINVAL;
  if (o.lb_policy != NULL && strcmp(o.lb_policy, "pick_first") != 0 &&
      strcmp(o.lb_policy, "round_robin") != 0)
    return PERFC_EINVAL;

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
    return PERFC_ENOMEM;
  }
  ch->default_timeout_ms = o.default_timeout_ms;
  atomic_init(&ch->next, 0);
  for (size_t i = 0; i < o.interceptor_count; i++)
    ch->ics[ch->nics++] = o.interceptors[i];

  char service_config[256];
  const char *sc = o.service_config_json;
  if (sc == NULL && o.lb_policy != NULL) {
    snprintf(service_config, sizeof service_config,
             "{\"loadBalancingConfig\":[{\"%s\":{}}]}", o.lb_policy);
    sc = service_config;
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
    if (o.keepalive_time_ms > 0) {
      INT_ARG(GRPC_ARG_KEEPALIVE_TIME_MS, clamp_int(o.keepalive_time_ms));
      INT_ARG(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, clamp_int(o.keepalive_timeout_ms));
      INT_ARG(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
              o.keepalive_permit_without_calls ? 1 : 0);
      /* Without this the core stops pinging after two pings with no data,
       * and keepalive would not detect a dead idle connection. */
      INT_ARG(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    }
    INT_ARG(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, o.max_recv_message_bytes);
    INT_ARG(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, o.max_send_message_bytes);
    INT_ARG(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
            clamp_int(o.min_reconnect_backoff_ms));
    INT_ARG(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
            clamp_int(o.min_reconnect_backoff_ms));
    INT_ARG(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
            clamp_int(o.max_reconnect_backoff_ms));
    /* Channels with identical target, credentials and args share one TCP
     * connection through the global subchannel pool. A local pool plus a
     * distinct index makes each of the N channels its own connection. */
    INT_ARG(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    INT_ARG("perfc.channel_index", (int)i);
    if (calgo != GRPC_COMPRESS_NONE) {
      INT_ARG(GRPC_COMPRESSION_CHANNEL_DEFAULT_ALGORITHM, (int)calgo);
    }
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
    ch->chans[i] = grpc_channel_create(target, creds, &ca);
  }
  *out = ch;
  return 0;
}

int perfc_channel_new(perfc_channel **out, const char *target,
                      const perfc_channel_opts *opts) {
  /* Credentials are core objects: create and release them inside a
   * grpc_init reference, as the TLS path does. */
  perfc__grpc_init();
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  int rc = channel_new(out, target, opts, creds, NULL);
  grpc_channel_credentials_release(creds);
  grpc_shutdown();
  return rc;
}

int perfc_channel_new_tls(perfc_channel **out, const char *target,
                          const perfc_channel_opts *opts,
                          const perfc_tls_channel_opts *tls) {
  if (out == NULL || target == NULL || target[0] == '\0')
    return PERFC_EINVAL;
  /* The SSL credentials object lives in the core; hold a grpc_init reference
   * while it exists so it is never created or released outside one. */
  perfc__grpc_init();
  grpc_channel_credentials *creds;
  int rc = perfc__tls_channel_creds(tls, &creds);
  if (rc == 0) {
    const char *override = tls != NULL && tls->server_name_override != NULL &&
                                   tls->server_name_override[0] != '\0'
                               ? tls->server_name_override
                               : NULL;
    rc = channel_new(out, target, opts, creds, override);
    grpc_channel_credentials_release(creds);
  }
  grpc_shutdown();
  return rc;
}

void perfc_channel_free(perfc_channel *ch) {
  if (ch == NULL)
    return;
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

  grpc_compression_algorithm calgo = GRPC_COMPRESS_NONE;
  if (opts->compression != NULL &&
      perfc__compression_parse(opts->compression, &calgo) != 0) {
    char e[160];
    int n = snprintf(e, sizeof e,
                     "unknown compression '%.40s' (gzip, deflate, identity)",
                     opts->compression);
    return set_status(status, PERFC_STATUS_INVALID_ARGUMENT, e, (size_t)n);
  }
  /* Metadata is checked here because the core would fail the whole batch
   * with an opaque error; a stack array covers the usual handful. */
  size_t md_count = opts->metadata_count + (opts->compression != NULL);
  grpc_metadata md_stack[8];
  grpc_metadata *md = md_stack;
  if (md_count > 8) {
    md = calloc(md_count, sizeof *md);
    if (md == NULL)
      return set_status(status, PERFC_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory", 13);
  }
  for (size_t i = 0; i < opts->metadata_count; i++) {
    const perfc_metadata *in = &opts->metadata[i];
    size_t vlen = in->value_len ? in->value_len
                                : (in->value ? strlen(in->value) : 0);
    if (perfc__check_metadata(in->key, in->value, vlen) != 0) {
      char e[160];
      int n = snprintf(e, sizeof e, "invalid request metadata key or value '%.60s'",
                       in->key ? in->key : "(null)");
      if (md != md_stack)
        free(md);
      return set_status(status, PERFC_STATUS_INVALID_ARGUMENT, e, (size_t)n);
    }
    memset(&md[i], 0, sizeof md[i]);
    md[i].key = grpc_slice_from_static_string(in->key);
    md[i].value = grpc_slice_from_static_buffer(in->value, vlen);
  }
  if (opts->compression != NULL) {
    /* The per-call override the core's compression filter reads (grpc's
     * C++ ClientContext::set_compression_algorithm sends the same key); the
     * filter removes it before anything goes on the wire. It wins over the
     * channel default, and "identity" turns compression off for this call. */
    const char *name = "identity";
    grpc_compression_algorithm_name(calgo, &name);
    grpc_metadata *c = &md[opts->metadata_count];
    memset(c, 0, sizeof *c);
    c->key = grpc_slice_from_static_string("grpc-internal-encoding-request");
    c->value = grpc_slice_from_static_string(name);
  }

  int64_t timeout = opts->timeout_ms ? opts->timeout_ms : ch->default_timeout_ms;
  gpr_timespec deadline = perfc__deadline_from_ms(timeout);
  unsigned idx = atomic_fetch_add_explicit(&ch->next, 1, memory_order_relaxed);
  grpc_channel *gch = ch->chans[idx % ch->n];

  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_slice path = grpc_slice_from_static_string(m->path);
  grpc_call *call = grpc_channel_create_call(gch, NULL, GRPC_PROPAGATE_DEFAULTS,
                                             cq, path, NULL, deadline, NULL);
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
  if (opts->wait_for_ready)
    ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                   GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
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
      if (recv_bb != NULL) {
        /* Without a caller arena, a multi-slice response is flattened into a
         * scratch arena freed below; the message itself is malloc'd. */
        perfc_arena *a = opts->arena;
        if (a == NULL && perfc_arena_new(&tmp, 0) == 0)
          a = tmp;
        rc = a ? perfc__byte_buffer_flatten(recv_bb, a, &data, &len)
               : PERFC_ENOMEM;
      }
      if (rc == 0) {
        ProtobufCAllocator al;
        ProtobufCAllocator *alp = NULL;
        if (opts->arena != NULL) {
          al = perfc_arena_allocator(opts->arena);
          alp = &al;
        }
        *resp = protobuf_c_message_unpack(m->output, alp, len, data);
      }
      perfc_arena_free(tmp);
      if (*resp == NULL) {
        char e[200];
        int n = snprintf(e, sizeof e,
                         recv_bb ? "%s: response does not parse as %s"
                                 : "%s: server sent OK without a %s message",
                         m->path, m->output->name);
        result = set_status(status, PERFC_STATUS_INTERNAL, e, (size_t)n);
      } else {
        set_status(status, PERFC_STATUS_OK, NULL, 0);
      }
    } else {
      set_status(status, result, (const char *)GRPC_SLICE_START_PTR(details),
                 GRPC_SLICE_LENGTH(details));
    }
  }

  grpc_slice_unref(details);
  grpc_metadata_array_destroy(&initial_md);
  grpc_metadata_array_destroy(&trailing_md);
  if (recv_bb != NULL)
    grpc_byte_buffer_destroy(recv_bb);
  grpc_byte_buffer_destroy(send_bb);
  grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_destroy(cq);
  if (md != md_stack)
    free(md);
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
  perfc_status_code code = PERFC_STATUS_OK;
  for (; entered < ch->nics; entered++) {
    const perfc_client_interceptor *ic = ch->ics[entered];
    if (ic->before && (code = ic->before(ic->self, m, &state[entered])) !=
                          PERFC_STATUS_OK) {
      entered++;
      const char *e = "refused by a client interceptor";
      set_status(st, code, e, strlen(e));
      break;
    }
  }
  if (code == PERFC_STATUS_OK) {
    for (size_t i = 0; i < entered; i++)
      if (ch->ics[i]->on_message)
        ch->ics[i]->on_message(ch->ics[i]->self, m, state[i], 1);
    code = do_unary(ch, m, req, resp, opts, st);
    if (code == PERFC_STATUS_OK)
      for (size_t i = 0; i < entered; i++)
        if (ch->ics[i]->on_message)
          ch->ics[i]->on_message(ch->ics[i]->self, m, state[i], 0);
  }
  int64_t elapsed = perfc__now_ns() - t0;
  for (size_t i = entered; i-- > 0;)
    if (ch->ics[i]->after)
      ch->ics[i]->after(ch->ics[i]->self, m, state[i], code, elapsed);
  perfc_status_reset(&local);
  return code;
}
