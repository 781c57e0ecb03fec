/*
 * observe/metrics_internal.h — what the runtime's own modules share when
 * they register their metrics. Never installed.
 *
 * Room: runtime/src/observe private header; used by observe/ and guard/
 * (both in libperfc: the data unit cannot call these hidden functions).
 */
#ifndef PERFC_OBSERVE_METRICS_INTERNAL_H
#define PERFC_OBSERVE_METRICS_INTERNAL_H

#include "perfc/metrics.h"

#include <stddef.h>

/* Registers a family named `name` with `help`, `label_count` label names
 * and the default buckets in `reg` (NULL = default registry): the shape of
 * every runtime metric keyed by labels such as grpc_service/grpc_method.
 * One routine so the breaker, shedding, rate limit and server metrics do
 * not each keep a copy. Returns what perfc_metrics_family_new() returns. */
int perfc__metrics_family(perfc_metrics_family **out,
                          perfc_metrics_registry *reg, perfc_metrics_type type,
                          const char *name, const char *help,
                          const char *const *label_names, size_t label_count);

#endif /* PERFC_OBSERVE_METRICS_INTERNAL_H */
