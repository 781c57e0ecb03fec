/*
 * error.c — perfc_strerror() and perfc_err_name(), generated from the one
 * error table in perfc/common.h so that names, numbers and messages can
 * never drift apart.
 *
 * Room: runtime/src; touches nothing else.
 */
#include "perfc/common.h"

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
