/*
 * grpc_util.c — small helpers over the gRPC C core shared by server and
 * client: byte-buffer flattening and packing, deadlines, metadata checks,
 * the core's log routing and why a listening address fails.
 *
 * Room: runtime/src/transport/core; wraps the grpc headers only.
 */
#include "server/server_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include "perfc/log.h"
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int perfc__byte_buffer_flatten(grpc_byte_buffer *bb, perfc_arena *a,
                               const uint8_t **data, size_t *len) {
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb))
    return PERFC_EPARSE; /* undecompressable payload */
  size_t total = grpc_byte_buffer_length(r.buffer_out);
  grpc_slice *s;
  /* The usual unary request is one slice: hand out a pointer into it after
   * checking nothing follows, and skip the copy. The slice lives as long as
   * the byte buffer, which the call keeps until it ends; a compressed buffer
   * is inflated into a reader-owned copy (buffer_out != bb), so it is
   * copied below instead. */
  if (r.buffer_out == bb && grpc_byte_buffer_reader_peek(&r, &s)) {
    if (GRPC_SLICE_LENGTH(*s) == total) {
      *data = GRPC_SLICE_START_PTR(*s);
      *len = total;
      grpc_byte_buffer_reader_destroy(&r);
      return 0;
    }
  }
  grpc_byte_buffer_reader_destroy(&r);
  if (!grpc_byte_buffer_reader_init(&r, bb))
    return PERFC_EPARSE;
  uint8_t *buf = perfc_arena_alloc(a, total);
  if (buf == NULL) {
    grpc_byte_buffer_reader_destroy(&r);
    return PERFC_ENOMEM;
  }
  size_t off = 0;
  grpc_slice slice;
  while (grpc_byte_buffer_reader_next(&r, &slice)) {
    size_t n = GRPC_SLICE_LENGTH(slice);
    memcpy(buf + off, GRPC_SLICE_START_PTR(slice), n);
    off += n;
    grpc_slice_unref(slice);
  }
  grpc_byte_buffer_reader_destroy(&r);
  *data = buf;
  *len = off;
  return 0;
}

grpc_byte_buffer *perfc__pack(const ProtobufCMessage *msg) {
  return perfc__pack_sized(msg, protobuf_c_message_get_packed_size(msg));
}

grpc_byte_buffer *perfc__pack_sized(const ProtobufCMessage *msg, size_t n) {
  grpc_slice s = grpc_slice_malloc(n);
  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

grpc_byte_buffer *perfc__bytes_to_buffer(const uint8_t *data, size_t len) {
  grpc_slice s = grpc_slice_from_copied_buffer((const char *)data, len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

int64_t perfc__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t perfc__remaining_ms(gpr_timespec deadline) {
  if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0)
    return INT64_MAX;
  gpr_timespec d = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
  gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
  int64_t ms = gpr_time_to_millis(left);
  return ms < 0 ? 0 : ms;
}

gpr_timespec perfc__deadline_from_ms(int64_t ms) {
  if (ms < 0)
    return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis(ms, GPR_TIMESPAN));
}

int perfc__check_metadata(const char *key, const char *value, size_t len) {
  if (key == NULL || value == NULL || key[0] == '\0')
    return PERFC_EINVAL;
  grpc_slice k = grpc_slice_from_static_string(key);
  if (!grpc_header_key_is_legal(k))
    return PERFC_EINVAL;
  /* Reserved: the transport owns the grpc- prefix and pseudo headers. */
  if (strncmp(key, "grpc-", 5) == 0)
    return PERFC_EINVAL;
  if (grpc_is_binary_header(k))
    return 0;
  grpc_slice v = grpc_slice_from_static_buffer(value, len);
  return grpc_header_nonbin_value_is_legal(v) ? 0 : PERFC_EINVAL;
}

/* Set around a core call whose failure perfc reports itself, in its own
 * words (a port that cannot be bound). */
static _Thread_local int core_log_quiet;

void perfc__grpc_log_quiet(int quiet) { core_log_quiet = quiet; }

/* The core logs to stderr on its own; route it through perfc's logger so a
 * service has one log stream in one format. Core errors are mostly echoes
 * of failures perfc reports itself (a bind error, a refused batch), hence
 * warn rather than error.
 *
 * Many core messages are a client's doing: every request with a malformed
 * grpc-timeout, grpc-encoding or other parsed header logs "Error parsing
 * metadata: error=invalid value key=grpc-timeout value=<what the client
 * sent>" (hpack_parser.cc), a bad TLS handshake logs one line per
 * connection. So each core call site (file:line) is rate-limited like any
 * client-caused perfc message, and what follows "value=" is cut to
 * PERFC_LOG_MAX_VALUE_BYTES before the logger's own caps. */
static void grpc_log_route(gpr_log_func_args *args) {
  perfc_log_level level = args->severity == GPR_LOG_SEVERITY_ERROR ? PERFC_LOG_WARN
                          : args->severity == GPR_LOG_SEVERITY_INFO ? PERFC_LOG_INFO
                                                                    : PERFC_LOG_DEBUG;
  if (core_log_quiet)
    level = PERFC_LOG_DEBUG;
  if (level < perfc_log_get_level())
    return;
  char site[128];
  snprintf(site, sizeof site, "grpc:%s:%d", args->file ? args->file : "",
           args->line);
  const char *msg = args->message ? args->message : "";
  const char *v = strstr(msg, " value=");
  size_t vlen = v ? strlen(v + 7) : 0;
  if (vlen > PERFC_LOG_MAX_VALUE_BYTES) {
    /* Cut inside the value, at a UTF-8 boundary. */
    size_t keep = PERFC_LOG_MAX_VALUE_BYTES;
    while (keep > 0 && ((unsigned char)v[7 + keep] & 0xc0) == 0x80)
      keep--;
    perfc_log_ratelimited(level, site, "grpc: %.*s\xe2\x80\xa6(+%zu bytes)",
                          (int)(v + 7 + keep - msg), msg, vlen - keep);
  } else {
    perfc_log_ratelimited(level, site, "grpc: %s", msg);
  }
}

static pthread_once_t log_once = PTHREAD_ONCE_INIT;

/* Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock
 * detector on: every lock the core takes also updates a global lock graph
 * (about 3 % of a streaming server's CPU, all of it in the core's own
 * mutexes). It is a debugging aid the core's upstream release builds do not
 * run, so perfc turns it off unless PERFC_ABSL_DEADLOCK_DETECTION=1 asks to
 * keep it. Abseil has no C API for this; the C++ function is found by its
 * mangled name, for the inline namespace Debian's Abseil uses, and nothing
 * happens when it is absent. */
static void absl_deadlock_detection_off(void) {
  const char *keep = getenv("PERFC_ABSL_DEADLOCK_DETECTION");
  if (keep != NULL && strcmp(keep, "1") == 0)
    return;
  typedef void (*set_mode_fn)(int);
  set_mode_fn set_mode = (set_mode_fn)(uintptr_t)dlsym(
      RTLD_DEFAULT,
      "_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE");
  if (set_mode != NULL)
    set_mode(0); /* absl::OnDeadlockCycle::kIgnore */
}

static void install_log_route(void) {
  gpr_set_log_function(grpc_log_route);
  absl_deadlock_detection_off();
}

void perfc__grpc_init(void) {
  pthread_once(&log_once, install_log_route);
  grpc_init();
}

void perfc__listen_failure(const char *addr, char *buf, size_t len) {
  /* The core's own error is a nested dump of its status tree (600 bytes
   * for a busy port); what a user needs is the errno of the bind, so the
   * address is bound again here, with the core's options, to read it. */
  static const char *const schemes[] = {"dns:///", "dns:", "ipv4:", "ipv6:"};
  for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++)
    if (strncmp(addr, schemes[i], strlen(schemes[i])) == 0) {
      addr += strlen(schemes[i]);
      break;
    }
  char host[256] = "";
  const char *port = NULL;
  const char *colon = strrchr(addr, ':');
  int n = -1;
  if (colon != NULL && colon[1] != '\0') {
    size_t hl = (size_t)(colon - addr);
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
      addr++;
      hl -= 2;
    }
    if (hl < sizeof host) {
      memcpy(host, addr, hl);
      host[hl] = '\0';
      port = colon + 1;
      n = 0;
    }
  }
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  if (n != 0 ||
      getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0) {
    snprintf(buf, len, "not an address this host can listen on");
    return;
  }
  int err = 0;
  for (struct addrinfo *ai = res; ai != NULL && err == 0; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      break;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)
      err = errno;
    close(fd);
  }
  freeaddrinfo(res);
  if (err == 0) {
    snprintf(buf, len, "the gRPC core refused it (its message is logged at "
                       "debug level)");
    return;
  }
  char tmp[128];
  const char *text = strerror_r(err, tmp, sizeof tmp); /* GNU: a string */
  snprintf(buf, len, "%s", text);
  if (buf[0] >= 'A' && buf[0] <= 'Z')
    buf[0] = (char)(buf[0] - 'A' + 'a');
}
