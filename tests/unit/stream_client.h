/* stream_client.h — a blocking streaming client on the gRPC C core, for
 * unit tests of streaming services (perfc's own client has no streaming
 * stubs yet). Header-only: every test executable is one .c file.
 *
 * Room: tests/unit helpers. One op of a kind at a time, each waited for on
 * the call's own pluck queue, as the core allows. */
#ifndef PERFC_TEST_STREAM_CLIENT_H
#define PERFC_TEST_STREAM_CLIENT_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <protobuf-c/protobuf-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sc_call {
  grpc_completion_queue *cq;
  grpc_call *call;
  grpc_metadata_array initial_md, trailing_md;
  grpc_status_code status;
  grpc_slice details;
  int got_initial;
  int tag; /* address used as the batch tag */
} sc_call;

static inline grpc_channel *sc_channel(int port) {
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(target, creds, NULL);
  grpc_channel_credentials_release(creds);
  return ch;
}

/* Runs one batch and waits for it; returns its success flag. */
static inline int sc_batch(sc_call *c, grpc_op *ops, size_t n) {
  if (grpc_call_start_batch(c->call, ops, n, &c->tag, NULL) != GRPC_CALL_OK)
    return 0;
  grpc_event ev = grpc_completion_queue_pluck(
      c->cq, &c->tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* Starts a call to `path` with a deadline `timeout_ms` from now and sends
 * the request headers. Returns 0 or -1. */
static inline int sc_open(sc_call *c, grpc_channel *ch, const char *path,
                          int64_t timeout_ms) {
  memset(c, 0, sizeof *c);
  c->cq = grpc_completion_queue_create_for_pluck(NULL);
  gpr_timespec deadline =
      gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                   gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
  grpc_slice method = grpc_slice_from_copied_string(path);
  c->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                     method, NULL, deadline, NULL);
  grpc_slice_unref(method);
  grpc_metadata_array_init(&c->initial_md);
  grpc_metadata_array_init(&c->trailing_md);
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_INITIAL_METADATA;
  return c->call != NULL && sc_batch(c, &op, 1) ? 0 : -1;
}

/* Sends one message; `close` also half-closes. Returns 0 or -1. */
static inline int sc_send(sc_call *c, const ProtobufCMessage *msg, int close) {
  size_t len = protobuf_c_message_get_packed_size(msg);
  grpc_slice s = grpc_slice_malloc(len);
  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_MESSAGE;
  ops[0].data.send_message.send_message = bb;
  ops[1].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  int ok = sc_batch(c, ops, close ? 2 : 1);
  grpc_byte_buffer_destroy(bb);
  return ok ? 0 : -1;
}

static inline int sc_close_send(sc_call *c) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  return sc_batch(c, &op, 1) ? 0 : -1;
}

/* Receives the next message as `d`. Returns 1 with *out set (free it with
 * protobuf_c_message_free_unpacked(*out, NULL)), 0 at the end of the stream,
 * -1 when it does not parse or the call failed. */
static inline int sc_recv(sc_call *c, const ProtobufCMessageDescriptor *d,
                          ProtobufCMessage **out) {
  grpc_byte_buffer *bb = NULL;
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  if (!c->got_initial) {
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
    n++;
    c->got_initial = 1;
  }
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n].data.recv_message.recv_message = &bb;
  n++;
  *out = NULL;
  if (!sc_batch(c, ops, n))
    return -1;
  if (bb == NULL)
    return 0;
  grpc_byte_buffer_reader r;
  grpc_byte_buffer_reader_init(&r, bb);
  grpc_slice all = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  grpc_byte_buffer_destroy(bb);
  *out = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(all),
                                   GRPC_SLICE_START_PTR(all));
  grpc_slice_unref(all);
  return *out != NULL ? 1 : -1;
}

/* Waits for the call's status; its message goes into `details` (NUL
 * terminated, truncated to `n`). */
static inline grpc_status_code sc_finish(sc_call *c, char *details, size_t n) {
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  size_t k = 0;
  if (!c->got_initial) {
    ops[k].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[k].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
    k++;
    c->got_initial = 1;
  }
  ops[k].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[k].data.recv_status_on_client.trailing_metadata = &c->trailing_md;
  ops[k].data.recv_status_on_client.status = &c->status;
  ops[k].data.recv_status_on_client.status_details = &c->details;
  k++;
  if (!sc_batch(c, ops, k))
    return GRPC_STATUS_UNKNOWN;
  if (details != NULL && n > 0) {
    size_t len = GRPC_SLICE_LENGTH(c->details);
    if (len >= n)
      len = n - 1;
    memcpy(details, GRPC_SLICE_START_PTR(c->details), len);
    details[len] = '\0';
  }
  grpc_slice_unref(c->details);
  c->details = grpc_empty_slice();
  return c->status;
}

static inline void sc_cancel(sc_call *c) { grpc_call_cancel(c->call, NULL); }

static inline void sc_free(sc_call *c) {
  if (c->call != NULL)
    grpc_call_unref(c->call);
  grpc_metadata_array_destroy(&c->initial_md);
  grpc_metadata_array_destroy(&c->trailing_md);
  grpc_completion_queue_shutdown(c->cq);
  while (grpc_completion_queue_pluck(c->cq, NULL,
                                     gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
             .type != GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy(c->cq);
}

#endif /* PERFC_TEST_STREAM_CLIENT_H */
