/*
 * client/client_tls.c — the client half of perfc/tls.h:
 * perfc_channel_new_tls(). The file checks and the credentials are
 * transport/core/tls.c's; the server half is server/server_tls.c.
 *
 * Room: runtime/src/client.
 */
#include "perfc/tls.h"
#include "client/client_internal.h"
#include "core/error_internal.h"
#include "transport/core/tls_internal.h"

#include <grpc/grpc.h>

int perfc_channel_new_tls(perfc_channel **out, const char *target,
                          const perfc_channel_opts *opts,
                          const perfc_tls_channel_opts *tls) {
  if (out == NULL)
    return perfc__fail(PERFC_EINVAL, "channel: out is NULL");
  if (target == NULL || target[0] == '\0')
    return perfc__fail(PERFC_EINVAL, "channel: no target");
  /* The SSL credentials object lives in the core; hold a grpc_init reference
   * while it exists so it is never created or released outside one. */
  perfc__grpc_init();
  grpc_channel_credentials *creds;
  int rc = perfc__tls_channel_creds(tls, &creds);
  if (rc == 0) {
    const char *override = tls != NULL && tls->server_name_override != NULL &&
                                   tls->server_name_override[0] != '\0'
                               ? tls->server_name_override
                               : NULL;
    rc = perfc__channel_new(out, target, opts, creds, override);
    grpc_channel_credentials_release(creds);
  }
  grpc_shutdown();
  return rc;
}

