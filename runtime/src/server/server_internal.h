/*
 * server_internal.h — pieces of the server shared with other rooms (observe,
 * guard) and the tests. Never installed. The call layer's
 * own structures are in call_internal.h; the seam to the transports is
 * transport_internal.h.
 *
 * Room: runtime/src/server private header.
 */
#ifndef PERFC_SERVER_INTERNAL_H
#define PERFC_SERVER_INTERNAL_H

#include "perfc/pool.h"
#include "perfc/server.h"

/* Tags, hand-off annotations and the clock live in core/; the C core
 * helpers with the transport that wraps them. Included here so the rooms
 * that use this header keep getting them. */
#include "core/clock_internal.h"
#include "core/tag_internal.h"
#include "transport/core/grpc_internal.h"

/* The observer given to the server's worker pool (perfc_pool_opts); before
 * the pool exists (a start hook). Used by the metrics interceptor. */
void perfc__server_set_pool_observer(perfc_server *srv,
                                     perfc_pool_observer_fn fn, void *ud);

/* The ports the server listens on (bound, so never 0); borrowed. */
size_t perfc__server_ports(const perfc_server *srv, const int **ports);

/* Reply batching on bidirectional streams (stream.c, perfc_stream): how
 * many replies of stream `s` were held back to be written with a later
 * one or at the stream's next wait, and the turn-around under which a
 * handler's reply may be held (20 µs; the tests raise it so that sanitizer
 * builds batch too). Exported for the integration tests only. */
unsigned long perfc__stream_replies_held(const perfc_stream *s);
extern int64_t perfc__stream_hold_ns;

/* The worker pool's counters (perfc_pool_stats_get), so a test can wait
 * for a call to be queued instead of guessing a delay. 0, or PERFC_ESTATE
 * when the server has no pool (not started). Exported for the integration
 * tests only. */
int perfc__server_pool_stats(perfc_server *srv,
                                       perfc_pool_stats *out);

/* For tests: how many requests poller `poller_index` has posted for the
 * method at `path` and not yet seen matched, and how many it keeps posted
 * (starts at 2 and doubles, up to requests_per_method, once the method has
 * more than twice that many calls running; transport/core/core_server.c,
 * rearm()). 0,
 * PERFC_ENOENT (no such method) or PERFC_ESTATE (not started, or no such
 * poller). Exported for the integration tests only; no installed header
 * declares it. */
int perfc__server_posted_requests(const perfc_server *srv,
                                            const char *path,
                                            unsigned poller_index,
                                            unsigned *posted, unsigned *depth);

#include "server/call_watch_internal.h"

/* The per-call slot of the first interceptor on ctx's server whose `before`
 * hook is `before`, when that hook ran for this call; else NULL. Lets a
 * module hand its per-call state to handlers (perfc_auth_claims) without
 * knowing which interceptor index it got. */
typedef perfc_status_code (*perfc__ic_before_fn)(void *self, void *method_state,
                                                 perfc_ctx *ctx,
                                                 void **call_state);
void *perfc__ctx_call_state(const perfc_ctx *ctx, perfc__ic_before_fn before);

#endif
