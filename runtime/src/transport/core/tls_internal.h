/*
 * tls_internal.h — credentials from checked PEM files, for the core
 * transport's listeners (core_server.c) and TLS channels (client_tls.c).
 * Never installed.
 *
 * Room: runtime/src/transport/core private header.
 */
#ifndef PERFC_TLS_INTERNAL_H
#define PERFC_TLS_INTERNAL_H

#include "perfc/tls.h"

#include <grpc/grpc_security.h>

/* Checks the files in `tls` and builds server credentials the caller
 * releases with grpc_server_credentials_release(). Needs grpc_init. Returns
 * 0, PERFC_EINVAL, PERFC_ENOMEM or PERFC_ETLS (message in
 * perfc_last_error(), already logged). */
int perfc__tls_server_creds(const perfc_tls_opts *tls,
                            grpc_server_credentials **out);

/* The same for a channel; `tls` NULL means system roots, no client
 * certificate. Release with grpc_channel_credentials_release(). */
int perfc__tls_channel_creds(const perfc_tls_channel_opts *tls,
                             grpc_channel_credentials **out);

#endif /* PERFC_TLS_INTERNAL_H */
