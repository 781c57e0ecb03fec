/*
 * perfc/process_metrics.h — the standard Prometheus process metrics
 * (client_golang's names) and perfc_build_info, read from /proc at scrape
 * time. See docs/metrics.md.
 *
 * Room: runtime public headers; implemented by
 * runtime/src/observe/process_metrics.c on perfc/metrics.h.
 */
#ifndef PERFC_PROCESS_METRICS_H
#define PERFC_PROCESS_METRICS_H

#include "perfc/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Registers the standard process metrics (process_cpu_seconds_total,
 *  process_resident_memory_bytes, process_virtual_memory_bytes,
 *  process_open_fds, process_max_fds, process_start_time_seconds, read from
 *  /proc at scrape time), `perfc_build_info{version="..."} 1` and
 *  `perfc_log_suppressed_total{level}` (records the logger's per-site rate
 *  limit dropped, perfc/log.h) in `reg` (NULL = default). Calling it twice
 *  on one registry is PERFC_EEXIST. Returns 0, PERFC_EEXIST, PERFC_EINVAL
 *  or PERFC_ENOMEM. */
PERFC_API int perfc_process_metrics_register(perfc_metrics_registry *reg);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_PROCESS_METRICS_H */
