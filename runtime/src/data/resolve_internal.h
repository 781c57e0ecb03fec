/*
 * data/resolve_internal.h — host names resolved off the loops, for the
 * clients that connect from a loop (redis_async.c, pg_async.c).
 *
 * Room: runtime/src/data private header. Why: hiredis's
 * redisAsyncConnect() and libpq's PQconnectStart() resolve a host name with
 * a blocking getaddrinfo() inside the call, so a slow or unreachable DNS
 * server stalled the loop (every connection on it) at each (re)connect.
 * Here one resolver thread per process does the lookups; a loop only reads
 * the last answer (a mutex held for a table lookup, no I/O).
 *
 * Answers are kept per name: a good one is served for ever and looked up
 * again in the background once it is RESOLVE_REFRESH_MS old (a stale
 * address is better than none while DNS is slow); a failure is asked
 * again at most once a second. Only the first address getaddrinfo()
 * returns is kept (IPv4 or IPv6, as the system orders them).
 */
#ifndef PERFC_DATA_RESOLVE_INTERNAL_H
#define PERFC_DATA_RESOLVE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Longest address text (an IPv6 address), with its NUL. */
#define PERFC__RESOLVE_ADDR_LEN 46

/* Takes a reference on the process's resolver (starting its thread with
 * the first one). Returns 0 or PERFC_ETHREAD. */
int perfc__resolve_ref(void);
/* Drops it; the last one stops the thread and forgets every answer. */
void perfc__resolve_unref(void);

/* Whether `host` needs resolving: not an IPv4/IPv6 literal, not a Unix
 * socket directory (a leading '/' or '@'), not empty. */
int perfc__resolve_is_name(const char *host);

/* Never blocks. The address of `host` into addr (PERFC__RESOLVE_ADDR_LEN
 * bytes): 0 (a literal is copied as it is), PERFC_EUNAVAILABLE (asked, no
 * answer yet: the lookup was queued), PERFC_ENOENT (the last lookup failed; asked
 * again in the background at most once a second) or PERFC_ENOMEM. Needs a
 * reference (perfc__resolve_ref). */
int perfc__resolve_peek(const char *host, char addr[PERFC__RESOLVE_ADDR_LEN]);

/* As peek, but waits up to wait_ms for an answer that is not there yet:
 * for start-up, off the loops (a client's _new()), so that the first
 * connects find the address. */
int perfc__resolve_wait(const char *host, char addr[PERFC__RESOLVE_ADDR_LEN],
                        int64_t wait_ms);

/* Tests: the lookup the thread runs (NULL: getaddrinfo). It fills addr
 * and returns 0, or returns non-zero for "does not resolve". */
typedef int (*perfc__resolve_lookup_fn)(const char *name,
                                        char addr[PERFC__RESOLVE_ADDR_LEN]);
void perfc__resolve_set_lookup(perfc__resolve_lookup_fn fn);

#endif
