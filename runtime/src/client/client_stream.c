/*
 * client_stream.c — client-streaming, server-streaming and bidi calls.
 *
 * Room: runtime/src/client. Uses the channel internals in client_internal.h.
 *
 * Each stream owns a pluck-type completion queue. Every operation starts a
 * batch with its own tag and plucks exactly that tag, so a sender thread and
 * a receiver thread can work on one bidi stream at the same time (the core
 * allows one outstanding op of each kind, and several pluckers on a queue).
 * Blocking until a send completes is the flow control.
 */
#include "client/client_internal.h"
#include "core/error_internal.h"
#include "core/pb_wire_internal.h"
#include "perfc/log.h"

#include <grpc/support/alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct perfc_client_stream {
  perfc_channel *ch;
  const perfc_method_desc *m;
  grpc_completion_queue *cq;
  grpc_call *call;
  perfc__cancel_watch watch; /* the parent's cancel (opts->parent) */
  grpc_metadata md_stack[8];
  grpc_metadata *md;
  size_t nmd;
  grpc_metadata_array initial_md, trailing_md;
  int got_initial; /* RECV_INITIAL_METADATA done */
  int half_closed;
  int ended;       /* the server finished sending */
  int finished;    /* status received */
  /* A failed batch ends that direction only: the server may finish a call
   * (status sent) while the client is still half-closing, which fails the
   * send side but leaves messages and the status to receive. */
  int send_failed;
  int recv_failed;
  int status_done; /* RECV_STATUS_ON_CLIENT completed */
  int no_compress; /* perfc_client_stream_compress(s, 0): GRPC_WRITE_NO_COMPRESS */
  atomic_int cancelled;
  grpc_status_code code;
  grpc_slice details;
  /* Received messages, reset on every receive (valid until the next). */
  perfc_arena *msg_arena;
  /* The single response of a client-streaming call, until free. */
  perfc_arena *resp_arena;
  void *ic_state[PERFC_MAX_INTERCEPTORS];
  size_t ic_entered;
  int64_t t0;
};

static int is_sending_kind(perfc_method_kind k) {
  return k == PERFC_METHOD_CLIENT_STREAM || k == PERFC_METHOD_BIDI_STREAM;
}

/* Runs one batch and waits for its own tag. Returns the ok flag. */
static int run_batch(perfc_client_stream *s, grpc_op *ops, size_t n) {
  /* The tag is the ops array: unique per concurrent batch, and it lives on
   * this thread's stack until pluck returns. */
  PERFC_HANDOFF_RELEASE(ops);
  if (grpc_call_start_batch(s->call, ops, n, ops, NULL) != GRPC_CALL_OK)
    return 0;
  grpc_event ev = grpc_completion_queue_pluck(
      s->cq, ops, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  PERFC_HANDOFF_ACQUIRE(ops);
  return ev.type == GRPC_OP_COMPLETE && ev.success;
}

int perfc_channel_stream_open(perfc_channel *ch, const perfc_method_desc *m,
                              const ProtobufCMessage *req,
                              const perfc_call_opts *opts,
                              perfc_client_stream **out) {
  static const perfc_call_opts no_opts;
  if (opts == NULL)
    opts = &no_opts;
  if (ch == NULL || m == NULL || out == NULL)
    return perfc__fail(PERFC_EINVAL, "stream_open: NULL %s",
                       ch == NULL ? "channel" : m == NULL ? "method" : "out");
  /* A unary method opened as a stream is a server stream of one response:
   * the way to a unary call's response metadata. */
  int server_stream = m->kind == PERFC_METHOD_SERVER_STREAM ||
                      m->kind == PERFC_METHOD_UNARY;
  if (server_stream && req == NULL)
    return perfc__fail(PERFC_EINVAL, "%s: opening it takes its request",
                       m->path);
  if (server_stream && req->descriptor != m->input)
    return perfc__fail(PERFC_EINVAL, "%s expects %s, got %s", m->path,
                       m->input->name, req->descriptor->name);
  if (!server_stream && req != NULL)
    return perfc__fail(PERFC_EINVAL,
                       "%s: a client or bidi stream opens without a request "
                       "(send it with perfc_client_stream_send)",
                       m->path);
  perfc_client_stream *s = calloc(1, sizeof *s);
  if (s == NULL)
    return perfc__fail(PERFC_ENOMEM, "%s: out of memory", m->path);
  char err[160];
  int rc = PERFC_ENOMEM;
  if (perfc_arena_new(&s->msg_arena, 0) == 0 &&
      perfc_arena_new(&s->resp_arena, 0) == 0)
    /* Copied: the initial metadata may go out after this function returns. */
    rc = perfc__call_metadata(opts, s->md_stack, 8, 1, &s->md, &s->nmd, err,
                              sizeof err);
  if (rc != 0) {
    perfc_arena_free(s->msg_arena);
    perfc_arena_free(s->resp_arena);
    free(s);
    return perfc__fail(rc, "%s: %s", m->path,
                       rc == PERFC_EINVAL ? err : "out of memory");
  }
  s->ch = ch;
  s->m = m;
  s->details = grpc_empty_slice();
  s->code = GRPC_STATUS_UNKNOWN;
  atomic_init(&s->cancelled, 0);
  grpc_metadata_array_init(&s->initial_md);
  grpc_metadata_array_init(&s->trailing_md);
  s->t0 = perfc__now_ns();
  s->cq = grpc_completion_queue_create_for_pluck(NULL);
  s->call = perfc__create_call(ch, m, s->cq, opts, &s->watch);
  *out = s;

  perfc_status_code refused = perfc__ic_before(ch, m, s->ic_state, &s->ic_entered);
  if (refused != PERFC_STATUS_OK) {
    grpc_call_cancel_with_status(s->call, (grpc_status_code)refused,
                                 "refused by a client interceptor", NULL);
    s->send_failed = s->recv_failed = 1;
    return 0;
  }
  perfc__ic_outgoing_md(ch, m, opts, s->ic_state, s->ic_entered, &s->md,
                        &s->nmd, s->md_stack);
  grpc_op ops[3];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[n].data.send_initial_metadata.count = s->nmd;
  ops[n].data.send_initial_metadata.metadata = s->md;
  ops[n].flags = perfc__initial_md_flags(opts);
  n++;
  grpc_byte_buffer *bb = NULL;
  if (server_stream) {
    bb = perfc__pack(req);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
    ops[n].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    n++;
    s->half_closed = 1;
    perfc__ic_message(ch, m, s->ic_state, s->ic_entered, 1);
  }
  if (!run_batch(s, ops, n))
    s->send_failed = 1; /* finish() reports why */
  if (bb != NULL)
    grpc_byte_buffer_destroy(bb);
  return 0;
}

/* PERFC_ESHUTDOWN, with the message that says where the reason is. */
static int call_ended(const perfc_client_stream *s) {
  return perfc__fail(PERFC_ESHUTDOWN,
                     "%s: the call ended (perfc_client_stream_finish() gives "
                     "its status)",
                     s->m->path);
}

/* `more`: the core may buffer the message until a later send without the
 * hint, or the half-close, writes it (perfc_client_stream_send_more). */
static int stream_send(perfc_client_stream *s, const ProtobufCMessage *msg,
                       int more) {
  if (s == NULL || msg == NULL)
    return perfc__fail(PERFC_EINVAL, "stream send: NULL %s",
                       s == NULL ? "stream" : "message");
  if (msg->descriptor != s->m->input)
    return perfc__fail(PERFC_EINVAL, "%s expects %s, got %s", s->m->path,
                       s->m->input->name, msg->descriptor->name);
  if (!is_sending_kind(s->m->kind) || s->half_closed)
    return perfc__fail(PERFC_ESTATE, "%s: %s", s->m->path,
                       s->half_closed ? "send after close_send"
                                      : "not a client or bidi stream");
  if (s->send_failed || atomic_load(&s->cancelled))
    return call_ended(s);
  grpc_op op;
  memset(&op, 0, sizeof op);
  grpc_byte_buffer *bb = perfc__pack(msg);
  op.op = GRPC_OP_SEND_MESSAGE;
  op.data.send_message.send_message = bb;
  op.flags = (s->no_compress ? GRPC_WRITE_NO_COMPRESS : 0) |
             (more ? GRPC_WRITE_BUFFER_HINT : 0);
  int ok = run_batch(s, &op, 1);
  grpc_byte_buffer_destroy(bb);
  if (!ok) {
    s->send_failed = 1;
    return call_ended(s);
  }
  perfc__ic_message(s->ch, s->m, s->ic_state, s->ic_entered, 1);
  return 0;
}

int perfc_client_stream_send(perfc_client_stream *s, const ProtobufCMessage *msg) {
  return stream_send(s, msg, 0);
}

int perfc_client_stream_send_more(perfc_client_stream *s,
                                  const ProtobufCMessage *msg) {
  return stream_send(s, msg, 1);
}

int perfc_client_stream_compress(perfc_client_stream *s, int enable) {
  if (s == NULL)
    return perfc__fail(PERFC_EINVAL, "stream compress: NULL stream");
  /* The encoding itself went out with the request headers; the core's
   * per-message flag is all that can change afterwards. */
  s->no_compress = !enable;
  return 0;
}

int perfc_client_stream_close_send(perfc_client_stream *s) {
  if (s == NULL)
    return perfc__fail(PERFC_EINVAL, "stream close_send: NULL stream");
  if (s->half_closed)
    return 0;
  s->half_closed = 1;
  if (s->send_failed)
    return call_ended(s);
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  if (!run_batch(s, &op, 1)) {
    s->send_failed = 1;
    return call_ended(s);
  }
  return 0;
}

/* Appends RECV_STATUS_ON_CLIENT to the `n` ops in `ops` (room for one more)
 * and runs them. The status always arrives, even on a failed call: the core
 * completes RECV_STATUS_ON_CLIENT with the reason. */
static void status_batch(perfc_client_stream *s, grpc_op *ops, size_t n) {
  ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[n].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
  ops[n].data.recv_status_on_client.status = &s->code;
  ops[n].data.recv_status_on_client.status_details = &s->details;
  n++;
  if (!run_batch(s, ops, n) && s->code == GRPC_STATUS_UNKNOWN &&
      GRPC_SLICE_LENGTH(s->details) == 0)
    s->code = GRPC_STATUS_INTERNAL;
  s->status_done = 1;
}

/* Collects the call's status (plus initial metadata not yet asked for);
 * does nothing the second time. */
static void collect_status(perfc_client_stream *s) {
  if (s->status_done)
    return;
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  if (!s->got_initial) {
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    n++;
    s->got_initial = 1;
  }
  status_batch(s, ops, n);
}

int perfc_client_stream_recv(perfc_client_stream *s, ProtobufCMessage **msg) {
  if (s == NULL || msg == NULL)
    return perfc__fail(PERFC_EINVAL, "stream recv: NULL %s",
                       s == NULL ? "stream" : "msg");
  *msg = NULL;
  if (s->m->kind == PERFC_METHOD_CLIENT_STREAM)
    return perfc__fail(PERFC_ESTATE,
                       "%s: a client stream's one response comes with "
                       "perfc_client_stream_finish()",
                       s->m->path);
  if (s->ended)
    return 0;
  if (s->recv_failed || atomic_load(&s->cancelled))
    return call_ended(s);
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  if (!s->got_initial) {
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    n++;
    s->got_initial = 1;
  }
  grpc_byte_buffer *bb = NULL;
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n].data.recv_message.recv_message = &bb;
  n++;
  if (!run_batch(s, ops, n)) {
    /* A receive can fail simply because the server's status won the race
     * with it (a trailers-only answer, say). Ask for the status now: OK
     * means the stream ended normally. */
    collect_status(s);
    if (s->code == GRPC_STATUS_OK) {
      s->ended = 1;
      return 0;
    }
    s->recv_failed = 1;
    return call_ended(s);
  }
  if (bb == NULL) { /* the server sent its status: no more messages */
    s->ended = 1;
    return 0;
  }
  perfc_arena_reset(s->msg_arena);
  const uint8_t *data;
  size_t len;
  int rc = perfc__byte_buffer_flatten(bb, s->ch->recv_max, s->msg_arena,
                                      &data, &len);
  if (rc == 0) {
    ProtobufCAllocator al = perfc_arena_allocator(s->msg_arena);
    char why[256] = "";
    *msg = perfc__pb_unpack(s->m->output, s->m->strings, &al, len, data, why,
                            sizeof why);
    if (*msg == NULL)
      rc = perfc__fail(PERFC_EPARSE, "%s: response refused: %s", s->m->path,
                       why[0] ? why : "does not parse");
  } else if (rc != PERFC_ETOOBIG) {
    rc = perfc__fail(rc, "%s: response %s", s->m->path,
                     rc == PERFC_EPARSE ? "corrupt compressed data"
                     : rc == PERFC_ENOMEM ? "out of memory"
                                          : "in an unknown encoding");
  }
  PERFC_CORE_MEMORY_BEGIN(); /* the core made it: see tag_internal.h */
  grpc_byte_buffer_destroy(bb);
  PERFC_CORE_MEMORY_END();
  if (rc == PERFC_ETOOBIG) {
    /* As the core does with a message over the limit: the call ends, and
     * its status says why. */
    char e[200];
    snprintf(e, sizeof e, "%s: response inflates past the %zu-byte receive limit",
             s->m->path, s->ch->recv_max);
    grpc_call_cancel_with_status(s->call, GRPC_STATUS_RESOURCE_EXHAUSTED, e,
                                 NULL);
    s->recv_failed = 1;
    perfc__fail(rc, "%s", e);
  }
  if (rc != 0)
    return rc;
  perfc__ic_message(s->ch, s->m, s->ic_state, s->ic_entered, 0);
  return 1;
}

perfc_status_code perfc_client_stream_finish(perfc_client_stream *s,
                                             ProtobufCMessage **resp,
                                             perfc_status *status) {
  if (resp != NULL)
    *resp = NULL;
  if (s == NULL)
    return PERFC_STATUS_INVALID_ARGUMENT;
  if (s->finished)
    return (perfc_status_code)s->code;
  if (!s->half_closed && !s->send_failed)
    perfc_client_stream_close_send(s);
  grpc_op ops[3];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  grpc_byte_buffer *bb = NULL;
  int client_stream = s->m->kind == PERFC_METHOD_CLIENT_STREAM;
  if (!client_stream && !s->ended && !s->recv_failed) {
    /* Unread messages are discarded: drain until the server's status. This
     * comes before RECV_INITIAL_METADATA is claimed below: the drain's own
     * receive asks for it, and a RECV_MESSAGE waits for initial metadata
     * that nobody asked for forever. */
    ProtobufCMessage *skip;
    while (perfc_client_stream_recv(s, &skip) == 1)
      ;
  }
  if (client_stream && !s->status_done) {
    /* The single response and the status in one batch. */
    if (!s->got_initial) {
      ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
      ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
      n++;
      s->got_initial = 1;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &bb;
    n++;
    status_batch(s, ops, n);
  }
  collect_status(s);
  s->finished = 1;
  perfc_status_code code = (perfc_status_code)s->code;
  const char *msg = (const char *)GRPC_SLICE_START_PTR(s->details);
  size_t msglen = GRPC_SLICE_LENGTH(s->details);
  char buf[400], why[256] = "";
  if (code == PERFC_STATUS_OK && client_stream) {
    ProtobufCMessage *r = NULL;
    const uint8_t *data;
    size_t len;
    int rc = bb != NULL ? perfc__byte_buffer_flatten(bb, s->ch->recv_max,
                                                     s->resp_arena, &data, &len)
                        : PERFC_EPARSE;
    if (rc == 0) {
      ProtobufCAllocator al = perfc_arena_allocator(s->resp_arena);
      r = perfc__pb_unpack(s->m->output, s->m->strings, &al, len, data, why,
                           sizeof why);
    }
    if (rc == PERFC_ETOOBIG) {
      code = PERFC_STATUS_RESOURCE_EXHAUSTED;
      msglen = (size_t)snprintf(buf, sizeof buf,
                                "%s: response inflates past the %zu-byte "
                                "receive limit",
                                s->m->path, s->ch->recv_max);
      msg = buf;
    } else if (r == NULL && why[0]) {
      code = PERFC_STATUS_INTERNAL;
      msglen = (size_t)snprintf(buf, sizeof buf, "%s: response refused: %s",
                                s->m->path, why);
      msg = buf;
    } else if (r == NULL) {
      code = PERFC_STATUS_INTERNAL;
      msglen = (size_t)snprintf(buf, sizeof buf, "%s: response missing or not a %s",
                                s->m->path, s->m->output->name);
      msg = buf;
    } else {
      perfc__ic_message(s->ch, s->m, s->ic_state, s->ic_entered, 0);
    }
    if (msg == buf && msglen >= sizeof buf)
      msglen = sizeof buf - 1; /* snprintf cut it short */
    if (resp != NULL)
      *resp = r;
  }
  PERFC_CORE_MEMORY_BEGIN();
  if (bb != NULL)
    grpc_byte_buffer_destroy(bb);
  PERFC_CORE_MEMORY_END();
  s->code = (grpc_status_code)code;
  if (status != NULL) {
    status->code = code;
    free(status->message);
    status->message = NULL;
    if (msglen > 0 && (status->message = malloc(msglen + 1)) != NULL) {
      PERFC_CORE_READS_BEGIN(); /* msg may be the core's details: see
                                   do_unary in client.c */
      memcpy(status->message, msg, msglen);
      PERFC_CORE_READS_END();
      status->message[msglen] = '\0';
    }
  }
  perfc__ic_after(s->ch, s->m, s->ic_state, s->ic_entered, code,
                  perfc__now_ns() - s->t0);
  s->ic_entered = 0;
  return code;
}

void perfc_client_stream_cancel(perfc_client_stream *s) {
  if (s == NULL)
    return;
  atomic_store(&s->cancelled, 1);
  grpc_call_cancel(s->call, NULL);
}

static const char *md_find(const grpc_metadata_array *a, const char *key,
                           size_t *len) {
  size_t klen = strlen(key);
  for (size_t i = 0; i < a->count; i++) {
    const grpc_metadata *md = &a->metadata[i];
    if (GRPC_SLICE_LENGTH(md->key) == klen &&
        memcmp(GRPC_SLICE_START_PTR(md->key), key, klen) == 0) {
      if (len != NULL)
        *len = GRPC_SLICE_LENGTH(md->value);
      return (const char *)GRPC_SLICE_START_PTR(md->value);
    }
  }
  return NULL;
}

const char *perfc_client_stream_metadata(perfc_client_stream *s, const char *key,
                                         size_t *len) {
  if (s == NULL || key == NULL)
    return NULL;
  const char *v = md_find(&s->initial_md, key, len);
  return v != NULL ? v : md_find(&s->trailing_md, key, len);
}

void perfc_client_stream_free(perfc_client_stream *s) {
  if (s == NULL)
    return;
  if (!s->finished) {
    /* The call must be over before its queue goes: cancel, then collect the
     * status the core owes us. */
    perfc_client_stream_cancel(s);
    perfc_client_stream_finish(s, NULL, NULL);
  }
  PERFC_CORE_MEMORY_BEGIN();
  grpc_slice_unref(s->details);
  grpc_metadata_array_destroy(&s->initial_md);
  grpc_metadata_array_destroy(&s->trailing_md);
  PERFC_CORE_MEMORY_END();
  perfc__call_metadata_free(s->md, s->nmd, s->md_stack);
  perfc__ctx_unwatch(&s->watch);
  grpc_call_unref(s->call);
  grpc_completion_queue_shutdown(s->cq);
  grpc_completion_queue_destroy(s->cq);
  perfc_arena_free(s->msg_arena);
  perfc_arena_free(s->resp_arena);
  free(s);
}
