/*
 * server/call_watch_internal.h — the parent call's cancel registry
 * (server/call.c): a client call made under a server call
 * (perfc_call_opts.parent) registers here to be cancelled with its parent,
 * whatever transport carries the parent.
 *
 * Room: runtime/src/server private header. It is the one server internal
 * the client includes (client/client.c, client_stream.c): propagation of a
 * parent's cancel is a service of the call layer to calls made from its
 * handlers, and needs nothing of the server's other internals (no gRPC
 * header, no transport).
 */
#ifndef PERFC_SERVER_CALL_WATCH_INTERNAL_H
#define PERFC_SERVER_CALL_WATCH_INTERNAL_H

#include "perfc/server.h"

/* A client call made under a server call (perfc_call_opts.parent),
 * registered for the parent's cancel whatever transport carries it: the
 * client reset or lost the parent, the parent's deadline passed on the
 * server (h2 ends such a call itself), or the shutdown grace ended while
 * the parent ran on a worker. The node lives in the client's call; the
 * fields are the registry's (server/call.c). */
typedef struct perfc__cancel_watch {
  struct perfc__cancel_watch *next, *prev;
  perfc_ctx *ctx; /* the parent; NULL once fired, detached or unwatched */
  perfc_server *srv;
  void (*cancel)(void *arg);
  void *arg;
} perfc__cancel_watch;

/* Registers `w`: `cancel(arg)` runs once (on the thread that learned of
 * the parent's cancel, under the registry's lock, so it must not block
 * nor call back into perfc) if the parent is cancelled before it finishes
 * or the watch is removed. Call on the parent's handler thread before its
 * handler returns. Returns 0, or 1 when the parent is already cancelled
 * (then `w` is not registered and the caller cancels its call itself).
 * When the parent finishes its watches are dropped, so a client call that
 * outlives the handler (an asynchronous one) is not cancelled later. */
int perfc__ctx_watch(perfc_ctx *parent, perfc__cancel_watch *w,
                     void (*cancel)(void *arg), void *arg);
/* Removes `w` if still registered; any thread, also after the parent
 * finished. After it returns `cancel` is not running and will not run. */
void perfc__ctx_unwatch(perfc__cancel_watch *w);


#endif /* PERFC_SERVER_CALL_WATCH_INTERNAL_H */
