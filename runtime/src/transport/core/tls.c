/*
 * tls.c — reads and checks PEM files with OpenSSL, then builds gRPC SSL
 * credentials from them.
 *
 * Room: runtime/src/transport/core. Owns nothing long-lived: every function reads its files,
 * builds credentials the caller releases, and frees the rest. Calls log only.
 *
 * Why check at all when gRPC checks too: gRPC reads the PEM strings only
 * when the first handshake happens, and then logs an opaque handshake error
 * per connection while the server looks healthy. Checking here turns a bad
 * deployment into one clear startup error that names the file.
 */
#include "perfc/tls.h"
#include "perfc/log.h"
#include "transport/core/tls_internal.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* PEM files for one service are a few KiB; a bigger file is almost surely a
 * wrong path (a log, a binary), and reading it whole would waste memory. */
#define PEM_MAX_BYTES (1024 * 1024)

/* Records the message as the thread's last error (perfc_last_error(),
 * perfc/common.h), logs it, and returns `code`, so each check is one
 * return line. */
static int fail_with(int code, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int fail_with(int code, const char *fmt, ...) {
  char msg[PERFC_ERROR_MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  perfc_log(PERFC_LOG_ERROR, "%s", msg);
  return perfc_error_set(code, NULL, -1, "%s", msg);
}
#define fail(...) fail_with(PERFC_ETLS, __VA_ARGS__)

/* OpenSSL's reason for the most recent failure, for appending to messages;
 * the queue is cleared so a later check does not report a stale reason. */
static const char *ssl_reason(char *buf, size_t len) {
  unsigned long e = ERR_peek_last_error();
  if (e == 0)
    snprintf(buf, len, "no further detail");
  else
    ERR_error_string_n(e, buf, len);
  ERR_clear_error();
  return buf;
}

void perfc_tls_opts_init(perfc_tls_opts *o) { memset(o, 0, sizeof *o); }

void perfc_tls_channel_opts_init(perfc_tls_channel_opts *o) {
  memset(o, 0, sizeof *o);
}

/* Reads `path` whole and NUL-terminated into *out (caller frees). `role` is
 * the file's job ("certificate", "private key", "CA") used in messages. */
static int read_pem(const char *role, const char *path, char **out) {
  *out = NULL;
  if (path == NULL || path[0] == '\0')
    return fail("TLS: no %s file given", role);
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    int e = errno;
    if (e == ENOENT)
      return fail("TLS: %s file %s: does not exist", role, path);
    if (e == EACCES)
      return fail("TLS: %s file %s: cannot be read: permission denied", role,
                  path);
    return fail("TLS: %s file %s: cannot be opened: %s", role, path,
                strerror(e));
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(f);
    return fail("TLS: %s file %s: is not a regular file", role, path);
  }
  if (st.st_size > PEM_MAX_BYTES) {
    fclose(f);
    return fail("TLS: %s file %s: is %lld bytes, too large for a PEM file",
                role, path, (long long)st.st_size);
  }
  char *buf = malloc((size_t)st.st_size + 1);
  if (buf == NULL) {
    fclose(f);
    return PERFC_ENOMEM;
  }
  size_t n = fread(buf, 1, (size_t)st.st_size, f);
  int read_err = ferror(f);
  fclose(f);
  if (read_err) {
    free(buf);
    return fail("TLS: %s file %s: read error", role, path);
  }
  buf[n] = '\0';
  if (n == 0) {
    free(buf);
    return fail("TLS: %s file %s: is empty", role, path);
  }
  if (strstr(buf, "-----BEGIN ") == NULL) {
    free(buf);
    return fail("TLS: %s file %s: not PEM: no \"-----BEGIN\" line", role, path);
  }
  *out = buf;
  return 0;
}

static void subject_of(X509 *x, char *buf, size_t len) {
  buf[0] = '\0';
  X509_NAME_oneline(X509_get_subject_name(x), buf, (int)len);
}

static void time_text(const ASN1_TIME *t, char *buf, size_t len) {
  buf[0] = '\0';
  BIO *b = BIO_new(BIO_s_mem());
  if (b == NULL)
    return;
  if (ASN1_TIME_print(b, t) > 0) {
    int n = BIO_read(b, buf, (int)len - 1);
    buf[n > 0 ? n : 0] = '\0';
  }
  BIO_free(b);
}

/* 0 when `x` is valid now; otherwise writes why into `why`. */
static int validity(X509 *x, char *why, size_t len) {
  char when[64];
  if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
    time_text(X509_get0_notBefore(x), when, sizeof when);
    snprintf(why, len, "not yet valid (valid from %s)", when);
    return -1;
  }
  if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
    time_text(X509_get0_notAfter(x), when, sizeof when);
    snprintf(why, len, "expired on %s", when);
    return -1;
  }
  return 0;
}

/* Parses every certificate in `pem` into a new stack (caller frees with
 * sk_X509_pop_free). Fails when there is none or one does not parse. */
static int parse_certs(const char *role, const char *path, const char *pem,
                       STACK_OF(X509) * *out) {
  *out = NULL;
  STACK_OF(X509) *certs = sk_X509_new_null();
  BIO *b = BIO_new_mem_buf(pem, -1);
  if (certs == NULL || b == NULL) {
    sk_X509_free(certs);
    BIO_free(b);
    return PERFC_ENOMEM;
  }
  ERR_clear_error();
  X509 *x;
  while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
    if (sk_X509_push(certs, x) == 0)
      X509_free(x);
  /* Running off the end shows up as "no start line"; anything else means a
   * certificate block that is present but broken. */
  unsigned long e = ERR_peek_last_error();
  int broken = e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM &&
                           ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
  BIO_free(b);
  int count = sk_X509_num(certs);
  if (broken || count == 0) {
    sk_X509_pop_free(certs, X509_free);
    if (broken) {
      char reason[256];
      return fail("TLS: %s file %s: certificate %d does not parse: %s", role,
                  path, count + 1, ssl_reason(reason, sizeof reason));
    }
    ERR_clear_error();
    return fail("TLS: %s file %s: contains no PEM certificate", role, path);
  }
  ERR_clear_error();
  *out = certs;
  return 0;
}

/* Reads and checks a certificate chain file and its key file. On success
 * the PEM texts are returned for gRPC (caller frees). */
static int load_pair(const char *cert_file, const char *key_file,
                     char **cert_pem, char **key_pem) {
  char reason[256], why[160], subj[256];
  *cert_pem = *key_pem = NULL;
  int rc = read_pem("certificate", cert_file, cert_pem);
  if (rc == 0)
    rc = read_pem("private key", key_file, key_pem);
  if (rc != 0)
    goto out;
  STACK_OF(X509) *chain = NULL;
  if ((rc = parse_certs("certificate", cert_file, *cert_pem, &chain)) != 0)
    goto out;
  for (int i = 0; i < sk_X509_num(chain); i++) {
    X509 *x = sk_X509_value(chain, i);
    if (validity(x, why, sizeof why) != 0) {
      subject_of(x, subj, sizeof subj);
      rc = fail("TLS: certificate file %s: certificate %d (%s) %s", cert_file,
                i + 1, subj, why);
      sk_X509_pop_free(chain, X509_free);
      goto out;
    }
  }

  BIO *b = BIO_new_mem_buf(*key_pem, -1);
  if (b == NULL) {
    sk_X509_pop_free(chain, X509_free);
    rc = PERFC_ENOMEM;
    goto out;
  }
  /* An empty passphrase callback: a service cannot answer a prompt, and
   * OpenSSL's default callback would read the terminal. */
  ERR_clear_error();
  EVP_PKEY *key = PEM_read_bio_PrivateKey(b, NULL, NULL, (void *)"");
  BIO_free(b);
  if (key == NULL) {
    sk_X509_pop_free(chain, X509_free);
    if (strstr(*key_pem, "ENCRYPTED") != NULL) {
      ERR_clear_error();
      rc = fail("TLS: private key file %s: key is encrypted; perfc needs an "
                "unencrypted key",
                key_file);
    } else {
      rc = fail("TLS: private key file %s: contains no PEM private key: %s",
                key_file, ssl_reason(reason, sizeof reason));
    }
    goto out;
  }
  X509 *leaf = sk_X509_value(chain, 0);
  if (X509_check_private_key(leaf, key) != 1) {
    ERR_clear_error();
    rc = fail("TLS: private key file %s: private key does not match "
              "certificate %s",
              key_file, cert_file);
  }
  EVP_PKEY_free(key);
  sk_X509_pop_free(chain, X509_free);
out:
  if (rc != 0) {
    free(*cert_pem);
    free(*key_pem);
    *cert_pem = *key_pem = NULL;
  }
  return rc;
}

/* Reads and checks a CA bundle. A bundle may hold an expired certificate
 * next to current ones (system bundles often do), so only a bundle with no
 * currently valid certificate is an error; expired ones are warned about. */
static int load_ca(const char *path, char **pem) {
  char why[160], subj[256];
  int rc = read_pem("CA", path, pem);
  if (rc != 0)
    return rc;
  STACK_OF(X509) *certs = NULL;
  if ((rc = parse_certs("CA", path, *pem, &certs)) != 0) {
    free(*pem);
    *pem = NULL;
    return rc;
  }
  int valid = 0;
  char first_why[320] = "";
  for (int i = 0; i < sk_X509_num(certs); i++) {
    X509 *x = sk_X509_value(certs, i);
    if (validity(x, why, sizeof why) == 0) {
      valid++;
      continue;
    }
    subject_of(x, subj, sizeof subj);
    if (first_why[0] == '\0')
      snprintf(first_why, sizeof first_why, "certificate %d (%.60s) %s", i + 1,
               subj, why);
    perfc_log(PERFC_LOG_WARN, "TLS: CA file %s: certificate %d (%s) %s", path,
              i + 1, subj, why);
  }
  sk_X509_pop_free(certs, X509_free);
  if (valid == 0) {
    free(*pem);
    *pem = NULL;
    return fail("TLS: CA file %s: no certificate in it is valid now: %s", path,
                first_why);
  }
  return 0;
}

/* Everything a server needs, checked. */
typedef struct server_pems {
  char *cert, *key, *ca;
} server_pems;

static void server_pems_free(server_pems *p) {
  free(p->cert);
  free(p->key);
  free(p->ca);
  memset(p, 0, sizeof *p);
}

static int load_server(const perfc_tls_opts *tls, server_pems *p) {
  memset(p, 0, sizeof *p);
  if (tls == NULL) {
    return fail_with(PERFC_EINVAL, "TLS: no TLS options given");
  }
  if (tls->client_auth != PERFC_TLS_CLIENT_AUTH_NONE &&
      tls->client_auth != PERFC_TLS_CLIENT_AUTH_REQUEST &&
      tls->client_auth != PERFC_TLS_CLIENT_AUTH_REQUIRE) {
    return fail_with(PERFC_EINVAL, "TLS: unknown client_auth mode %d",
                     (int)tls->client_auth);
  }
  int rc = load_pair(tls->cert_file, tls->key_file, &p->cert, &p->key);
  if (rc == 0 && tls->client_auth != PERFC_TLS_CLIENT_AUTH_NONE) {
    if (tls->client_ca_file == NULL || tls->client_ca_file[0] == '\0')
      rc = fail("TLS: client_auth %s needs a client CA file to verify client "
                "certificates",
                tls->client_auth == PERFC_TLS_CLIENT_AUTH_REQUIRE ? "require"
                                                                  : "request");
    else
      rc = load_ca(tls->client_ca_file, &p->ca);
  }
  if (rc != 0)
    server_pems_free(p);
  return rc;
}

int perfc_tls_check(const perfc_tls_opts *tls) {
  server_pems p;
  int rc = load_server(tls, &p);
  server_pems_free(&p);
  return rc;
}

int perfc__tls_server_creds(const perfc_tls_opts *tls,
                            grpc_server_credentials **out) {
  *out = NULL;
  server_pems p;
  int rc = load_server(tls, &p);
  if (rc != 0)
    return rc;
  grpc_ssl_pem_key_cert_pair pair = {.private_key = p.key,
                                     .cert_chain = p.cert};
  grpc_ssl_client_certificate_request_type req =
      GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  if (tls->client_auth == PERFC_TLS_CLIENT_AUTH_REQUEST)
    req = GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
  else if (tls->client_auth == PERFC_TLS_CLIENT_AUTH_REQUIRE)
    req = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  /* The core copies the PEM strings, so ours are freed right after. */
  *out = grpc_ssl_server_credentials_create_ex(p.ca, &pair, 1, req, NULL);
  server_pems_free(&p);
  if (*out == NULL)
    return fail("TLS: gRPC refused the server credentials built from %s and "
                "%s",
                tls->cert_file, tls->key_file);
  return 0;
}

int perfc__tls_channel_creds(const perfc_tls_channel_opts *tls,
                             grpc_channel_credentials **out) {
  *out = NULL;
  static const perfc_tls_channel_opts defaults;
  if (tls == NULL)
    tls = &defaults;
  char *ca = NULL, *cert = NULL, *key = NULL;
  int rc = 0;
  int has_cert = tls->cert_file != NULL && tls->cert_file[0] != '\0';
  int has_key = tls->key_file != NULL && tls->key_file[0] != '\0';
  if (has_cert != has_key)
    return fail("TLS: a client certificate needs both cert_file and key_file "
                "(got only %s)",
                has_cert ? "cert_file" : "key_file");
  if (tls->root_ca_file != NULL && tls->root_ca_file[0] != '\0')
    rc = load_ca(tls->root_ca_file, &ca);
  if (rc == 0 && has_cert)
    rc = load_pair(tls->cert_file, tls->key_file, &cert, &key);
  if (rc == 0) {
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    *out = grpc_ssl_credentials_create(ca, has_cert ? &pair : NULL, NULL, NULL);
    if (*out == NULL)
      rc = fail("TLS: gRPC refused the channel credentials");
  }
  free(ca);
  free(cert);
  free(key);
  return rc;
}
