/*
 * perfc/tls.h — TLS and mutual TLS for servers and channels, from PEM files.
 *
 * Every file is read and checked with OpenSSL before gRPC sees it: missing
 * or unreadable files, files without PEM content, a private key that does
 * not match its certificate, certificates that expired or are not valid yet,
 * and CA files that do not parse all fail at once with PERFC_ETLS. The
 * message names the file and the problem; it is logged at ERROR level and
 * kept for the calling thread in perfc_last_error(), where every perfc
 * module leaves its failure. docs/tls.md lists every check and message.
 *
 * Room: runtime public headers. The functions here may be called from any
 * thread; perfc_last_error() is per thread. Sources: the options and the
 * file checks in transport/core/tls.c, perfc_server_listen_tls() in
 * server/server_tls.c, perfc_channel_new_tls() in client/client_tls.c.
 */
#ifndef PERFC_TLS_H
#define PERFC_TLS_H

#include "perfc/client.h"
#include "perfc/common.h"
#include "perfc/server.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Whether a TLS server asks connecting clients for a certificate. */
typedef enum perfc_tls_client_auth {
  /** Do not ask: plain server-authenticated TLS (the default). */
  PERFC_TLS_CLIENT_AUTH_NONE = 0,
  /** Ask; a client may connect without one, but a certificate it does send
   *  must verify against the client CA file. */
  PERFC_TLS_CLIENT_AUTH_REQUEST = 1,
  /** Mutual TLS: a client without a certificate that verifies against the
   *  client CA file cannot connect. */
  PERFC_TLS_CLIENT_AUTH_REQUIRE = 2
} perfc_tls_client_auth;

/** Server TLS settings. Paths are borrowed for the duration of the call that
 *  takes them; the files are read then, not later. */
typedef struct perfc_tls_opts {
  /** PEM certificate chain, leaf first. Required. */
  const char *cert_file;
  /** PEM private key for the leaf certificate. Required. */
  const char *key_file;
  /** PEM CA certificates that client certificates must chain to. Required
   *  unless client_auth is NONE (then it is ignored). */
  const char *client_ca_file;
  /** Zero = PERFC_TLS_CLIENT_AUTH_NONE. */
  perfc_tls_client_auth client_auth;
} perfc_tls_opts;

/** Fills `o` with defaults: no files, PERFC_TLS_CLIENT_AUTH_NONE. */
PERFC_API void perfc_tls_opts_init(perfc_tls_opts *o);

/** Channel TLS settings. Paths and strings are borrowed for the duration of
 *  perfc_channel_new_tls(); files are read then. */
typedef struct perfc_tls_channel_opts {
  /** PEM CA certificates the server's certificate must chain to. NULL = the
   *  system roots (gRPC's lookup: $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, then
   *  the distribution bundle such as /etc/ssl/certs/ca-certificates.crt). */
  const char *root_ca_file;
  /** Client certificate chain and key for mutual TLS; both or neither. */
  const char *cert_file;
  const char *key_file;
  /** Host name checked against the server certificate instead of the one in
   *  the target (GRPC_SSL_TARGET_NAME_OVERRIDE_ARG). For tests and for
   *  addressing a server by IP whose certificate names a host; NULL = the
   *  target's host. */
  const char *server_name_override;
} perfc_tls_channel_opts;

/** Fills `o` with defaults: system roots, no client certificate. */
PERFC_API void perfc_tls_channel_opts_init(perfc_tls_channel_opts *o);

/** Adds a TLS listening address, like perfc_server_listen() but encrypted.
 *  The files in `tls` are checked first; any problem returns PERFC_ETLS
 *  with the server unchanged and the reason in perfc_last_error().
 *  Before perfc_server_start() only. Returns 0, PERFC_EINVAL (NULL
 *  argument), PERFC_ETLS, PERFC_ENOMEM, PERFC_EBIND or PERFC_ESTATE. */
PERFC_API int perfc_server_listen_tls(perfc_server *srv, const char *addr,
                                      const perfc_tls_opts *tls,
                                      int *bound_port);

/** Creates a TLS channel, like perfc_channel_new() (`opts` may be NULL and
 *  means the same). `tls` may be NULL: system roots, no client certificate.
 *  The files are checked first; any problem returns PERFC_ETLS with the
 *  reason in perfc_last_error(). The caller frees the channel with
 *  perfc_channel_free(). Returns 0, PERFC_EINVAL, PERFC_ETLS or
 *  PERFC_ENOMEM. */
PERFC_API int perfc_channel_new_tls(perfc_channel **out, const char *target,
                                    const perfc_channel_opts *opts,
                                    const perfc_tls_channel_opts *tls);

/** Checks server TLS files without a server: the same checks as
 *  perfc_server_listen_tls(), e.g. for a `--check-config` flag. Returns 0 or
 *  PERFC_ETLS / PERFC_EINVAL / PERFC_ENOMEM. */
PERFC_API int perfc_tls_check(const perfc_tls_opts *tls);

/** Kept for existing callers: the same as perfc_last_error() (the one
 *  place every module leaves its failure, perfc/common.h). A TLS failure's
 *  message reads like "TLS: private key file /etc/x/server.key: private
 *  key does not match certificate /etc/x/server.crt"; it is also logged at
 *  ERROR. Like perfc_last_error(), a successful call does not clear it. */
static inline const char *perfc_tls_last_error(void) {
  return perfc_last_error();
}

#ifdef __cplusplus
}
#endif
#endif /* PERFC_TLS_H */
