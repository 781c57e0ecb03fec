/*
 * transport/core/grpc_internal.h — what the C core transport offers the
 * rooms above it: byte buffers, deadlines, metadata checks, the core's log
 * route and bind-failure reasons (grpc_util.c), and the core call behind a
 * server context (core_server.c). The client and the server both build on
 * these, so they live with the layer they wrap, not in either of them.
 *
 * Room: runtime/src/transport/core private header. Includes the grpc
 * headers: only rooms that talk to the core include it.
 */
#ifndef PERFC_TRANSPORT_CORE_GRPC_INTERNAL_H
#define PERFC_TRANSPORT_CORE_GRPC_INTERNAL_H

#include "perfc/arena.h"
#include "perfc/server.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>

#include <stddef.h>
#include <stdint.h>

/* Makes a received message contiguous in `a` (a single-slice message is
 * not copied: *data points into `bb`, which must outlive its use). A
 * message that arrived compressed (gzip or deflate; perfc turns the core's
 * own decompression off, see GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION in
 * transport/core/core_server.c) is inflated here, and inflation stops as soon as the output
 * passes `max` bytes (SIZE_MAX: no limit), having allocated at most that.
 * Returns 0, PERFC_ETOOBIG (larger than `max`), PERFC_EPARSE (corrupt
 * compressed data), PERFC_EINVAL (an encoding perfc cannot inflate) or
 * PERFC_ENOMEM. */
int perfc__byte_buffer_flatten(grpc_byte_buffer *bb, size_t max,
                               perfc_arena *a, const uint8_t **data,
                               size_t *len);

/* The server's max_recv_message_bytes option (-1 = unlimited) as a byte
 * bound. */
size_t perfc__recv_limit(int max_recv_message_bytes);

/* Packs `msg` into a new byte buffer the caller destroys. NULL on OOM. */
grpc_byte_buffer *perfc__pack(const ProtobufCMessage *msg);

/* perfc__pack() when the caller already has the packed size `n` (computing
 * it walks the whole message again). */
grpc_byte_buffer *perfc__pack_sized(const ProtobufCMessage *msg, size_t n);

/* A new byte buffer holding a copy of `len` bytes (borrowed). */
grpc_byte_buffer *perfc__bytes_to_buffer(const uint8_t *data, size_t len);

/* Monotonic milliseconds until `deadline`; INT64_MAX for infinite. */
int64_t perfc__remaining_ms(gpr_timespec deadline);

/* Deadline `ms` from now on the monotonic clock; infinite for ms < 0. */
gpr_timespec perfc__deadline_from_ms(int64_t ms);

/* Checks a metadata key/value pair before handing it to the core, which
 * would otherwise fail the whole call. Returns 0 or PERFC_EINVAL. */
int perfc__check_metadata(const char *key, const char *value, size_t len);

/* grpc_init() plus, once per process, routing the core's own log lines
 * through perfc_log(). Pair with grpc_shutdown(). */
void perfc__grpc_init(void);

/* While `quiet` is set on this thread, the core's error lines go to the
 * debug level: for a call whose failure perfc reports itself, better. */
void perfc__grpc_log_quiet(int quiet);

/* Why listening on `addr` ("host:port", "[v6]:port") fails, found by
 * binding it the way the core does: strerror's text in lower case, such as
 * "address already in use", or a fixed sentence when the address does not
 * resolve or binds now. Writes a NUL-terminated string into buf. */
void perfc__listen_failure(const char *addr, char *buf, size_t len);

/* The core call behind a server context (for deadline and cancel
 * propagation into client calls); NULL when another transport carries it
 * (transport/core/core_server.c). */
grpc_call *perfc__ctx_call(perfc_ctx *ctx);

#endif
