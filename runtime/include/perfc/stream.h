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

/** Receives the next message into the call's arena. Returns 1 with `*msg`
 *  set, 0 at end of stream (the peer half-closed), or a negative PERFC_E*
 *  code: PERFC_ESHUTDOWN when the call was cancelled or its deadline passed,
 *  PERFC_EPARSE when the message does not parse. */
PERFC_API int perfc_stream_recv(perfc_stream *s, ProtobufCMessage **msg);

/** Sends one message and waits until the transport accepted it (flow
 *  control: a slow reader slows the writer instead of growing a buffer).
 *  `msg` is borrowed. Returns 0, PERFC_ESHUTDOWN (cancelled / deadline) or
 *  PERFC_ETOOBIG (over the send limit). */
PERFC_API int perfc_stream_send(perfc_stream *s, const ProtobufCMessage *msg);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_STREAM_H */
