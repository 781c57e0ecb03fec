/*
 * grpc_util.c — small helpers over the gRPC C core shared by server and
 * client: byte-buffer flattening and packing, deadlines, metadata checks,
 * the core's log routing and why a listening address fails.
 *
 * Room: runtime/src/transport/core; wraps the grpc headers only.
 */
#include "core/tag_internal.h"
#include "transport/core/grpc_internal.h"
#include "core/thread_internal.h"

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
#include <zlib.h>
#include <limits.h>

/* The last four bytes of a slice buffer (a gzip member's ISIZE), or 0 when
 * it holds fewer. */
static uint32_t tail_u32(const grpc_slice_buffer *sb) {
  uint8_t b[4];
  size_t want = 4;
  for (size_t i = sb->count; i-- > 0 && want > 0;) {
    const uint8_t *p = GRPC_SLICE_START_PTR(sb->slices[i]);
    size_t n = GRPC_SLICE_LENGTH(sb->slices[i]);
    while (n > 0 && want > 0)
      b[--want] = p[--n];
  }
  if (want > 0)
    return 0;
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
         (uint32_t)b[3] << 24;
}

/* One inflate() call of inflate_bounded(): grows the output buffer by
 * doubling up to `limit` first (PERFC_ETOOBIG when it is full at the
 * limit), then inflates into the room left. With Z_NO_FLUSH a full output
 * buffer (Z_BUF_ERROR with no room) is progress; with Z_FINISH any
 * Z_BUF_ERROR that leaves room means the input ended early. Sets *ended at
 * the end of the compressed stream. */
static int inflate_step(z_stream *zs, int flush, uint8_t **buf, size_t *cap,
                        size_t *out, size_t limit, int *ended) {
  if (*out == *cap) {
    if (*cap == limit)
      return PERFC_ETOOBIG;
    size_t ncap = *cap <= limit / 2 ? *cap * 2 : limit;
    uint8_t *nb = realloc(*buf, ncap);
    if (nb == NULL)
      return PERFC_ENOMEM;
    *buf = nb;
    *cap = ncap;
  }
  size_t room = *cap - *out;
  zs->next_out = *buf + *out;
  zs->avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
  uInt before = zs->avail_out;
  int zr = inflate(zs, flush);
  *out += before - zs->avail_out;
  if (zr == Z_STREAM_END) {
    *ended = 1;
    return 0;
  }
  if (zr == Z_MEM_ERROR)
    return PERFC_ENOMEM;
  if (zr == Z_OK && flush == Z_NO_FLUSH)
    return 0;
  if (zr == Z_BUF_ERROR && zs->avail_out == 0)
    return 0; /* out of room: the next step grows the buffer */
  return PERFC_EPARSE; /* corrupt, or (Z_FINISH) truncated */
}

/* Inflates a gzip or zlib ("deflate") message into `a`, stopping as soon as
 * the output passes `max`: the working buffer never holds more than
 * max + 1 bytes, whatever the compressed form claims. The output is
 * gathered in a malloc'd buffer that grows by doubling (realloc of a large
 * block moves no bytes: glibc remaps it) and is copied into the arena once
 * its size is known, so a legitimate message costs its size twice for a
 * moment and a bomb costs at most the limit. */
static int inflate_bounded(const grpc_slice_buffer *in, int gzip, size_t max,
                           perfc_arena *a, const uint8_t **data, size_t *len) {
  size_t in_len = in->length;
  if (in_len == 0) { /* the core passes empty "compressed" messages as empty */
    *data = (const uint8_t *)"";
    *len = 0;
    return 0;
  }
  size_t limit = max < SIZE_MAX ? max + 1 : SIZE_MAX; /* one byte tells "over" */
  size_t cap = in_len < SIZE_MAX / 4 ? in_len * 4 : SIZE_MAX;
  if (gzip) {
    /* ISIZE, the inflated size mod 2^32, sizes the first buffer so that an
     * honest message inflates without a realloc. It is only a guess (a
     * sender may lie, and corrupt data has none), so the limit below and
     * the growth by doubling decide, never ISIZE. */
    uint32_t isize = tail_u32(in);
    cap = (size_t)isize + 1;
  }
  if (cap < 256)
    cap = 256;
  if (cap > limit)
    cap = limit;
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (inflateInit2(&zs, gzip ? 15 + 16 : 15) != Z_OK)
    return PERFC_ENOMEM;
  uint8_t *buf = malloc(cap);
  int rc = buf != NULL ? 0 : PERFC_ENOMEM;
  size_t out = 0;
  int ended = 0;
  for (size_t i = 0; rc == 0 && i < in->count; i++) {
    zs.next_in = GRPC_SLICE_START_PTR(in->slices[i]);
    zs.avail_in = (uInt)GRPC_SLICE_LENGTH(in->slices[i]);
    while (rc == 0 && zs.avail_in > 0) {
      if (ended) {
        rc = PERFC_EPARSE; /* bytes after the end of the stream */
        break;
      }
      rc = inflate_step(&zs, Z_NO_FLUSH, &buf, &cap, &out, limit, &ended);
    }
  }
  /* The stream may end after the last input byte was consumed (inflate
   * then still holds its trailer check): one more call tells. */
  while (rc == 0 && !ended)
    rc = inflate_step(&zs, Z_FINISH, &buf, &cap, &out, limit, &ended);
  inflateEnd(&zs);
  if (rc == 0 && out > max)
    rc = PERFC_ETOOBIG;
  if (rc == 0) {
    uint8_t *dst = perfc_arena_alloc(a, out);
    if (dst == NULL) {
      rc = PERFC_ENOMEM;
    } else {
      memcpy(dst, buf, out);
      *data = dst;
      *len = out;
    }
  }
  free(buf);
  return rc;
}

static int flatten(grpc_byte_buffer *bb, size_t max, perfc_arena *a,
                   const uint8_t **data, size_t *len) {
  /* The raw slices are read directly, never through
   * grpc_byte_buffer_reader: the reader inflates a compressed buffer in
   * full, with no bound (the decompression bomb of docs/reliability.md). */
  const grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
  switch (bb->data.raw.compression) {
  case GRPC_COMPRESS_NONE:
    break;
  case GRPC_COMPRESS_GZIP:
    return inflate_bounded(sb, 1, max, a, data, len);
  case GRPC_COMPRESS_DEFLATE:
    return inflate_bounded(sb, 0, max, a, data, len);
  default:
    return PERFC_EINVAL;
  }
  size_t total = sb->length;
  if (total > max)
    return PERFC_ETOOBIG; /* the core checks this too; cheap to be sure */
  /* The usual message is one slice: hand out a pointer into it and skip
   * the copy. The slice lives as long as the byte buffer, which the caller
   * keeps until it has unpacked the message. */
  if (sb->count == 1) {
    *data = GRPC_SLICE_START_PTR(sb->slices[0]);
    *len = total;
    return 0;
  }
  uint8_t *buf = perfc_arena_alloc(a, total);
  if (buf == NULL)
    return PERFC_ENOMEM;
  size_t off = 0;
  for (size_t i = 0; i < sb->count; i++) {
    size_t n = GRPC_SLICE_LENGTH(sb->slices[i]);
    memcpy(buf + off, GRPC_SLICE_START_PTR(sb->slices[i]), n);
    off += n;
  }
  *data = buf;
  *len = off;
  return 0;
}

int perfc__byte_buffer_flatten(grpc_byte_buffer *bb, size_t max,
                               perfc_arena *a, const uint8_t **data,
                               size_t *len) {
  PERFC_CORE_READS_BEGIN(); /* the core's memory: see core/tag_internal.h */
  int rc = flatten(bb, max, a, data, len);
  PERFC_CORE_READS_END();
  return rc;
}

size_t perfc__recv_limit(int max_recv_message_bytes) {
  return max_recv_message_bytes < 0 ? SIZE_MAX : (size_t)max_recv_message_bytes;
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
  /* The threads the core starts here (and those they start later) leave
   * SIGINT and SIGTERM to the application's threads, as perfc's own do. */
  sigset_t old;
  perfc__stop_signals_block(&old);
  grpc_init();
  perfc__stop_signals_restore(&old);
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
