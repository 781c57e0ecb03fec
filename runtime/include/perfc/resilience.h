/*
 * perfc/resilience.h — umbrella header for the interceptors that keep a
 * service up under load and keep callers off a failing dependency:
 * token-bucket rate limiting (perfc/ratelimit.h), adaptive load shedding
 * (perfc/shedding.h), per-method default timeouts (perfc/timeouts.h), and
 * Google SRE adaptive throttling on the client (perfc/breaker.h).
 * docs/reliability.md explains each mechanism, its defaults and its
 * metrics.
 *
 * Room: runtime public headers. Kept, as docs/reliability.md and
 * docs/configuration.md promise it: including it gives the four modules;
 * each module has its own header, one per source in runtime/src/guard/.
 */
#ifndef PERFC_RESILIENCE_H
#define PERFC_RESILIENCE_H

#include "perfc/breaker.h"
#include "perfc/ratelimit.h"
#include "perfc/shedding.h"
#include "perfc/timeouts.h"

#endif /* PERFC_RESILIENCE_H */
