/*
 * status.c — a gRPC status as an HTTP answer: the status code by
 * google.rpc.Code's documented HTTP mapping (the one grpc-gateway and
 * Envoy's transcoder answer with) and a google.rpc.Status JSON body.
 *
 * Room: runtime/src/gateway (libperfc-gateway).
 */
#include "gateway/json_internal.h"

#include <stdio.h>
#include <string.h>

int perfc_http_status_from_grpc(perfc_status_code code) {
  switch (code) {
  case PERFC_STATUS_OK:
    return 200;
  case PERFC_STATUS_CANCELLED:
    return 499; /* "Client Closed Request", as google.rpc.Code says */
  case PERFC_STATUS_UNKNOWN:
    return 500;
  case PERFC_STATUS_INVALID_ARGUMENT:
    return 400;
  case PERFC_STATUS_DEADLINE_EXCEEDED:
    return 504;
  case PERFC_STATUS_NOT_FOUND:
    return 404;
  case PERFC_STATUS_ALREADY_EXISTS:
    return 409;
  case PERFC_STATUS_PERMISSION_DENIED:
    return 403;
  case PERFC_STATUS_RESOURCE_EXHAUSTED:
    return 429;
  case PERFC_STATUS_FAILED_PRECONDITION:
    return 400;
  case PERFC_STATUS_ABORTED:
    return 409;
  case PERFC_STATUS_OUT_OF_RANGE:
    return 400;
  case PERFC_STATUS_UNIMPLEMENTED:
    return 501;
  case PERFC_STATUS_INTERNAL:
    return 500;
  case PERFC_STATUS_UNAVAILABLE:
    return 503;
  case PERFC_STATUS_DATA_LOSS:
    return 500;
  case PERFC_STATUS_UNAUTHENTICATED:
    return 401;
  }
  return 500;
}

int perfc_gateway_status_json(perfc_status_code code, const char *message,
                              perfc_arena *arena, char **out, size_t *len) {
  if (!arena || !out)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_gateway_status_json: NULL argument");
  const char *m = message ? message : "";
  size_t ml = strlen(m);
  /* Worst case every byte becomes \u00XX. */
  size_t cap = 64 + 6 * ml;
  char *buf = perfc_arena_alloc(arena, cap);
  if (!buf)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
  size_t o = (size_t)snprintf(buf, cap, "{\"code\":%d,\"message\":\"", (int)code);
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < ml; i++) {
    unsigned char c = (unsigned char)m[i];
    if (c == '"' || c == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)c;
    } else if (c < 0x20) {
      memcpy(buf + o, "\\u00", 4);
      buf[o + 4] = hex[c >> 4];
      buf[o + 5] = hex[c & 15];
      o += 6;
    } else {
      buf[o++] = (char)c; /* UTF-8 passes through */
    }
  }
  memcpy(buf + o, "\",\"details\":[]}", 16);
  o += 15;
  *out = buf;
  if (len)
    *len = o;
  return 0;
}
