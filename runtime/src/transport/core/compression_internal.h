/*
 * compression_internal.h — the compression names perfc accepts in server,
 * channel and call options. Never installed.
 *
 * Room: runtime/src/transport/core private header.
 */
#ifndef PERFC_COMPRESSION_INTERNAL_H
#define PERFC_COMPRESSION_INTERNAL_H

#include <grpc/compression.h>
#include <string.h>

/* Maps "gzip", "deflate" and "identity" (and NULL/"" = identity) to the
 * core's algorithm. Returns 0, or -1 for any other name. The core's own
 * parser also knows stream compression names; perfc does not offer those,
 * because grpcio and grpc-go peers do not speak them. */
static inline int perfc__compression_parse(const char *name,
                                           grpc_compression_algorithm *out) {
  if (name == NULL || name[0] == '\0' || strcmp(name, "identity") == 0)
    *out = GRPC_COMPRESS_NONE;
  else if (strcmp(name, "gzip") == 0)
    *out = GRPC_COMPRESS_GZIP;
  else if (strcmp(name, "deflate") == 0)
    *out = GRPC_COMPRESS_DEFLATE;
  else
    return -1;
  return 0;
}

#endif /* PERFC_COMPRESSION_INTERNAL_H */
