/*
 * pb_strings.c — microbenchmark: what the string check (runtime/src/
 * pb_wire.c, perfc__pb_check_strings) adds to decoding a request, next to
 * protobuf-c's unpack of the same bytes, for 64-byte messages:
 *   bytes   google.protobuf.BytesValue, 62 payload bytes (the echo bench's
 *           request shape: one bytes field; the walk skips it)
 *   ascii   google.protobuf.StringValue, 62 ASCII bytes (8-byte fast path)
 *   utf8    google.protobuf.StringValue, 62 bytes of 2- and 3-byte UTF-8
 *   proto2  the ascii bytes checked for NUL only (memchr)
 *
 * Room: benchmarks (micro). Not built by CMake. After building the runtime:
 *
 *   cc -O2 -I runtime/include -I runtime/src -I build/runtime/wkt \
 *      bench/micro/pb_strings.c runtime/src/pb_wire.c -L build/lib \
 *      -lperfc-wkt -lprotobuf-c -Wl,-rpath,$PWD/build/lib -o build/pb_strings
 *   ./build/pb_strings [calls]            # nanoseconds per call
 *   valgrind --tool=callgrind --callgrind-out-file=cg.out ./build/pb_strings 100000
 *   (or one case: ./build/pb_strings 100000 ascii)
 *   callgrind_annotate --inclusive=yes cg.out | grep -E 'run_check|run_unpack'
 *     # instructions per call = inclusive Ir / calls (one case per run)
 *
 * Each case runs `calls` times through both functions; unpack uses a bump
 * allocator reset per call, like the server's call arena.
 */
#include "pb_wire_internal.h"

#include <google/protobuf/wrappers.pb-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned char arena[4096];
static size_t arena_used;

static void *bump_alloc(void *ud, size_t n) {
  (void)ud;
  n = (n + 15) & ~(size_t)15;
  if (arena_used + n > sizeof arena)
    return NULL;
  void *p = arena + arena_used;
  arena_used += n;
  return p;
}

static void bump_free(void *ud, void *p) {
  (void)ud;
  (void)p;
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Kept out of line so callgrind shows each on its own. */
__attribute__((noinline)) static int run_check(const ProtobufCMessageDescriptor *d,
                                               const uint8_t *b, size_t len,
                                               perfc_string_check mode) {
  perfc__pb_bad_field bad;
  return (int)perfc__pb_check_strings(d, b, len, mode, &bad);
}

__attribute__((noinline)) static int run_unpack(const ProtobufCMessageDescriptor *d,
                                                const uint8_t *b, size_t len) {
  ProtobufCAllocator al = {bump_alloc, bump_free, NULL};
  arena_used = 0;
  return protobuf_c_message_unpack(d, &al, len, b) != NULL;
}

int main(int argc, char **argv) {
  long calls = argc > 1 ? atol(argv[1]) : 2000000;
  const char *only = argc > 2 ? argv[2] : NULL; /* one case by name */
  static uint8_t bytes_msg[64], ascii_msg[64], utf8_msg[64];
  /* field 1, length 62 */
  bytes_msg[0] = ascii_msg[0] = utf8_msg[0] = 0x0a;
  bytes_msg[1] = ascii_msg[1] = utf8_msg[1] = 62;
  for (int i = 0; i < 62; i++) {
    bytes_msg[2 + i] = (uint8_t)(i * 37);
    ascii_msg[2 + i] = (uint8_t)('a' + i % 26);
  }
  /* "grüß € " repeated: 2- and 3-byte sequences, cut on a boundary */
  static const char pattern[] = "gr\xc3\xbc\xc3\x9f \xe2\x82\xac ";
  size_t n = 0;
  while (n + sizeof pattern - 1 <= 62) {
    memcpy(utf8_msg + 2 + n, pattern, sizeof pattern - 1);
    n += sizeof pattern - 1;
  }
  while (n < 62)
    utf8_msg[2 + n++] = 'x';

  static const struct {
    const char *name;
    const ProtobufCMessageDescriptor *d;
    const uint8_t *b;
    perfc_string_check mode;
  } cases[] = {
      {"bytes", &google__protobuf__bytes_value__descriptor, bytes_msg,
       PERFC_STRINGS_UTF8},
      {"ascii", &google__protobuf__string_value__descriptor, ascii_msg,
       PERFC_STRINGS_UTF8},
      {"utf8", &google__protobuf__string_value__descriptor, utf8_msg,
       PERFC_STRINGS_UTF8},
      {"proto2", &google__protobuf__string_value__descriptor, ascii_msg,
       PERFC_STRINGS_NO_NUL},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    if (only != NULL && strcmp(only, cases[c].name) != 0)
      continue;
    int sink = 0;
    double t0 = now_ns();
    for (long i = 0; i < calls; i++)
      sink += run_check(cases[c].d, cases[c].b, 64, cases[c].mode);
    double t1 = now_ns();
    if (sink != 0) {
      fprintf(stderr, "%s: the check refused valid bytes\n", cases[c].name);
      return 1;
    }
    if (c < 3) {
      for (long i = 0; i < calls; i++)
        sink += run_unpack(cases[c].d, cases[c].b, 64);
      if (sink != calls) {
        fprintf(stderr, "%s: unpack failed\n", cases[c].name);
        return 1;
      }
    }
    double t2 = now_ns();
    printf("%-7s check %6.1f ns/call", cases[c].name, (t1 - t0) / calls);
    if (c < 3)
      printf("   unpack %6.1f ns/call", (t2 - t1) / calls);
    printf("\n");
  }
  return 0;
}
