/*
 * perfc/stream.h — the reader/writer a streaming handler gets, and the
 * callbacks of a streaming handler that runs on its transport's loop.
 *
 * Two styles of streaming handler:
 * - Blocking (the generated handlers struct): the handler runs on a worker
 *   of the pool, one worker per open stream, and calls perfc_stream_recv()
 *   and perfc_stream_send(), which block. Every transport.
 * - Loop callbacks (perfc_server_set_stream_callbacks()): the stream's
 *   events (start, each message, the half-close, room to send again, a
 *   cancel) call the handler's callbacks on the transport's loop thread
 *   that owns the connection; nothing blocks, sends answer PERFC_EFULL
 *   when the stream already holds as much as flow control allows, and the
 *   handler ends the call with perfc_stream_finish(). No worker, no thread
 *   hand-off per message. The h2 transport only (the C core transport
 *   refuses the registration: PERFC_ESTATE).
 *
 * Generated code wraps recv/send with typed `pkg__svc__method__recv()` and
 * `pkg__svc__method__send()` inline functions; the send wrappers work in
 * both styles.
 *
 * Room: runtime public headers. A stream is used by the one thread running
 * its handler: the worker, or for loop callbacks the loop thread, only from
 * inside its callbacks.
 */
#ifndef PERFC_STREAM_H
#define PERFC_STREAM_H

#include "perfc/common.h"
#include "perfc/service.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Receives the next message into the stream's message arena (valid until
 *  the next receive). The receive of the following message is started
 *  before this returns, so at most one message is read ahead. Returns 1
 *  with `*msg` set, 0 at end of stream (the peer half-closed), or a
 *  negative PERFC_E* code: PERFC_ESHUTDOWN when the call was cancelled or its deadline passed,
 *  PERFC_EPARSE when the message does not parse or a string field in it is
 *  refused (perfc_string_check: a NUL byte, invalid UTF-8); the call's
 *  message then says which field, and the handler should return
 *  PERFC_STATUS_INVALID_ARGUMENT. */
PERFC_API int perfc_stream_recv(perfc_stream *s, ProtobufCMessage **msg);

/** Sends one message: it is serialised at once (`msg` is borrowed only
 *  during the call) and handed to the transport, and the call returns
 *  without waiting for the write. The next send, and the handler's return,
 *  first wait until the transport took this one, so a slow reader slows the
 *  writer with at most one message held (flow control). On a bidi stream
 *  a reply made quickly while the next request is already here may be held
 *  and written together with the following replies; it goes out at the
 *  latest when the handler next waits for a request, receives the end of
 *  the requests, sends with no request waiting, or returns
 *  (perfc_server_opts.stream_flush_every_send). Returns 0,
 *  PERFC_ESHUTDOWN (cancelled / deadline; a failure of the previous send
 *  shows here) or PERFC_ETOOBIG (over the send limit). */
PERFC_API int perfc_stream_send(perfc_stream *s, const ProtobufCMessage *msg);
/* On a loop stream (perfc_server_set_stream_callbacks) perfc_stream_send()
 * and perfc_stream_send_more() never block: the message is serialised and
 * queued for this loop iteration's write (`msg` borrowed during the call),
 * and they return 0; PERFC_EFULL when the stream already holds its
 * high-water mark unsent (a slow reader: nothing was queued; send it
 * again after on_writable); PERFC_ESHUTDOWN once the call is cancelled,
 * past its deadline or finished; PERFC_ETOOBIG over the send limit;
 * PERFC_ESTATE outside the stream's callbacks' thread. */

/** Like perfc_stream_send(), for a message that more follow at once (a
 *  burst of a server stream, say): it is held and written together with
 *  the next ones, at the latest when the handler next sends with
 *  perfc_stream_send(), waits for a request, or returns; up to 32 messages
 *  (or 64 KiB) go out in one write instead of one each. The promise is the
 *  caller's: a handler that blocks elsewhere (a sleep, its own I/O) after
 *  this call delays the message by as long. The first message of a stream
 *  is never held (it carries the response headers). Same returns. */
PERFC_API int perfc_stream_send_more(perfc_stream *s,
                                     const ProtobufCMessage *msg);

/* ---- loop callbacks: streaming handlers that never block ------------------ */

typedef struct perfc_server perfc_server;

/**
 * The callbacks of a streaming method handled on its loop. All run on the
 * loop thread that owns the call's connection, one at a time per stream;
 * none may block (a handler that must wait on I/O of its own uses the
 * blocking style). `state` is what on_start left in `*state` (the
 * registration's `user_data` unless it changed it); perfc never frees it.
 *
 * A stream started (on_start returned OK) ends exactly one way:
 * - the handler calls perfc_stream_finish() (from any of its callbacks),
 *   after which no callback runs and `s` must not be used; or
 * - the call is cancelled first (the client reset it or went away, its
 *   deadline or one the server set passed, the shutdown grace ended):
 *   on_cancel runs once, last, and perfc ends the call itself
 *   (CANCELLED, or DEADLINE_EXCEEDED for a deadline).
 * So the handler frees per-stream state in the callback where it finishes
 * and in on_cancel.
 */
typedef struct perfc_stream_callbacks {
  /** Required. The stream starts: client and bidi streams at once, before
   *  any message (a client may wait for the server to speak first); a
   *  server stream with its request `req` (NULL for the other kinds),
   *  decoded in the call's arena. `resp` is the single response of a
   *  client stream (in the arena, initialised; NULL for other kinds): fill
   *  it before finishing OK. Return PERFC_STATUS_OK to take the stream
   *  (it may already be finished: a short server stream can send
   *  everything and finish here), or any other code to end the call with
   *  it at once (message through perfc_ctx_error(); no other callback
   *  runs). */
  perfc_status_code (*on_start)(perfc_ctx *ctx, perfc_stream *s,
                                const ProtobufCMessage *req,
                                ProtobufCMessage *resp, void **state);
  /** A request message (client and bidi streams), decoded in the stream's
   *  message arena: valid until the callback returns. Return 0 when taken,
   *  or PERFC_EFULL when the handler cannot take it now (typically a send
   *  returned PERFC_EFULL): the message is kept, the stream's
   *  flow-control window stays shut, and the same message is delivered
   *  again after perfc_stream_resume(). Refuse only after a send answered
   *  PERFC_EFULL: on_writable then follows, and is where the resume
   *  belongs (nothing else calls back into a stream that waits; there is
   *  no way to run code on the loop from another thread in this release).
   *  NULL: messages are dropped. */
  int (*on_message)(perfc_stream *s, const ProtobufCMessage *msg, void *state);
  /** The client sent its last message. NULL: the call finishes with
   *  PERFC_STATUS_OK (and, for a client stream, `resp`). */
  void (*on_half_close)(perfc_stream *s, void *state);
  /** A send that returned PERFC_EFULL may be made again: the stream's
   *  unsent bytes fell below half its high-water mark. NULL: perfc calls
   *  perfc_stream_resume() (redelivering a message on_message refused). */
  void (*on_writable)(perfc_stream *s, void *state);
  /** The call was cancelled before the handler finished it (see above).
   *  Last; `s` must not be used after it returns. May be NULL. */
  void (*on_cancel)(perfc_stream *s, void *state);
} perfc_stream_callbacks;

/** Handles streaming method `path` ("/pkg.Service/Method", or its name
 *  "Method" when unique among the server's methods) with loop callbacks
 *  instead of the blocking handler the service registration gave (which
 *  may be NULL). `cb` is copied; `user_data` is borrowed and is each
 *  stream's initial `state`. After perfc_server_add_service() of the
 *  method's service, before perfc_server_start(). Returns 0;
 *  PERFC_EINVAL (NULL argument, no on_start, a unary method); PERFC_ENOENT
 *  (no such method registered); PERFC_ESTATE (server started, or its
 *  transport cannot run handlers on a loop: the C core transport has no
 *  loop of perfc's, so `server.transport: core` refuses here and the
 *  message, perfc_last_error(), says so). Interceptors, metrics, the
 *  access log, tracing, deadlines and the shutdown grace apply as for
 *  blocking handlers. */
PERFC_API int perfc_server_set_stream_callbacks(perfc_server *srv,
                                                const char *path,
                                                const perfc_stream_callbacks *cb,
                                                void *user_data);

/** The call a stream belongs to (borrowed, valid while the stream is). */
PERFC_API perfc_ctx *perfc_stream_ctx(perfc_stream *s);

/** Ends a loop stream with `code` (a message set before through
 *  perfc_ctx_error() goes with it) after the messages already sent; for a
 *  client stream finishing OK, the `resp` given to on_start is the
 *  response. No callback runs after it; `s` is the transport's again.
 *  Returns 0; PERFC_ESTATE when `s` is not a loop stream or it was
 *  already finished or cancelled. */
PERFC_API int perfc_stream_finish(perfc_stream *s, perfc_status_code code);

/** After on_message returned PERFC_EFULL: delivers the kept message again
 *  (from the caller's callback, at once) and reopens the stream's window.
 *  Call it from on_writable or any other callback but on_message. Returns
 *  0, or PERFC_ESTATE when `s` is not a loop stream or has finished. */
PERFC_API int perfc_stream_resume(perfc_stream *s);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_STREAM_H */
