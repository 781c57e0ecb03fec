/*
 * perfc/access_log.h — an access-log server interceptor: one record per
 * call with method, status code, duration and peer, through perfc_log.
 * Off by default; turn it on with perfc_access_log_attach().
 *
 * Room: runtime public headers. Builds on perfc/interceptor.h and
 * perfc/log.h. Never logs metadata or messages, so secrets carried in
 * headers (tokens, cookies) cannot leak into logs through it.
 */
#ifndef PERFC_ACCESS_LOG_H
#define PERFC_ACCESS_LOG_H

#include "perfc/interceptor.h"
#include "perfc/log.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Adds the access-log interceptor to `srv` (before start); the arguments
 *  read as every module's perfc_X_attach(X, srv), the level being all there
 *  is of the access log. Records are
 *  logged at `level` (PERFC_LOG_INFO is usual); calls that end with a status
 *  other than OK are logged at least at PERFC_LOG_WARN when `level` is
 *  lower, except CANCELLED, NOT_FOUND, ALREADY_EXISTS and INVALID_ARGUMENT,
 *  which are the client's business. Returns what
 *  perfc_server_add_interceptor() returns. */
PERFC_API int perfc_access_log_attach(perfc_log_level level, perfc_server *srv);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_ACCESS_LOG_H */
