/*
 * perfc/stream.h — the reader/writer a streaming handler gets.
 *
 * Generated code wraps these with typed `pkg__svc__method__recv()` and
 * `pkg__svc__method__send()` inline functions.
 *
 * Room: runtime public headers. A stream is used by the one thread running
 * its handler.
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

#ifdef __cplusplus
}
#endif
#endif /* PERFC_STREAM_H */
