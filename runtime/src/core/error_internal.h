/*
 * core/error_internal.h — how a module leaves the calling thread's error
 * detail (perfc_last_error(), perfc/common.h). Every module reports through
 * these; none keeps a last-error of its own.
 *
 * Room: runtime/src/core.
 */
#ifndef PERFC_CORE_ERROR_INTERNAL_H
#define PERFC_CORE_ERROR_INTERNAL_H

#include "perfc/common.h"

/* A failure reads `return perfc__fail(PERFC_EINVAL, "%s: ...", key);`:
 * perfc_error_set() (perfc/common.h) without a SQLSTATE or batch index. It
 * is public rather than internal because every link unit (libperfc,
 * libperfc-data, libperfc-config) must write the same thread-local detail. */
#define perfc__fail(code, ...) perfc_error_set((code), NULL, -1, __VA_ARGS__)

#endif /* PERFC_CORE_ERROR_INTERNAL_H */
