/*
 * server/server_tls.c — the server half of perfc/tls.h:
 * perfc_server_listen_tls(). The file checks and the credentials are
 * transport/core/tls.c's (perfc_tls_check); the client half is
 * client/client_tls.c.
 *
 * Room: runtime/src/server.
 */
#include "perfc/tls.h"
#include "server/call_internal.h"

int perfc_server_listen_tls(perfc_server *srv, const char *addr,
                            const perfc_tls_opts *tls, int *bound_port) {
  if (srv == NULL || addr == NULL || tls == NULL)
    return PERFC_EINVAL;
  return perfc__server_listen(srv, addr, tls, bound_port);
}
