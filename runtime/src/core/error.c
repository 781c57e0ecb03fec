/*
 * error.c — perfc_strerror() and perfc_err_name(), generated from the one
 * error table in perfc/common.h so that names, numbers and messages can
 * never drift apart; and the calling thread's error detail, the one place
 * every module leaves what failed (perfc_last_error()).
 *
 * Room: runtime/src/core; touches nothing else.
 */
#include "perfc/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Thread-local, like errno: a failing call on one thread never overwrites
 * what another thread is about to read. Fixed size, so recording a failure
 * cannot itself fail. */
static _Thread_local struct {
  int code;
  long index;
  char sqlstate[6];
  char message[PERFC_ERROR_MESSAGE_MAX];
} last;

int perfc_error_set(int code, const char *sqlstate, long index,
                    const char *fmt, ...) {
  last.code = code;
  last.index = index;
  last.sqlstate[0] = '\0';
  if (sqlstate != NULL) {
    strncpy(last.sqlstate, sqlstate, sizeof last.sqlstate - 1);
    last.sqlstate[sizeof last.sqlstate - 1] = '\0';
  }
  if (fmt == NULL) {
    snprintf(last.message, sizeof last.message, "%s", perfc_strerror(code));
  } else {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last.message, sizeof last.message, fmt, ap);
    va_end(ap);
  }
  return code;
}

const char *perfc_last_error(void) { return last.message; }

perfc_error_detail perfc_last_error_detail(void) {
  perfc_error_detail d = {.code = last.code,
                          .message = last.message,
                          .sqlstate = last.sqlstate,
                          .index = last.code != 0 ? last.index : -1};
  return d;
}

unsigned perfc_version(void) { return PERFC_VERSION_NUMBER; }

const char *perfc_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define XX(name, value, msg)                                                   \
  case value:                                                                  \
    return msg;
    PERFC_ERRNO_MAP(XX)
#undef XX
  default:
    return "unknown error";
  }
}

const char *perfc_err_name(int err) {
  switch (err) {
  case 0:
    return "OK";
#define XX(name, value, msg)                                                   \
  case value:                                                                  \
    return #name;
    PERFC_ERRNO_MAP(XX)
#undef XX
  default:
    return "EUNKNOWN";
  }
}
