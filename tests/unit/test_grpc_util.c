/* test_grpc_util.c — runtime/src/transport/core/grpc_util.c: byte-buffer flattening
 * (single slice without a copy, several slices), packing,
 * deadlines, metadata checks. */
#include "server/server_internal.h"

#include <criterion/criterion.h>
#include <google/protobuf/wrappers.pb-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

TestSuite(grpc_util, .init = grpc_init, .fini = grpc_shutdown);

Test(grpc_util, flatten_single_slice_in_place_and_several_slices) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 0), 0);
  grpc_slice one = grpc_slice_from_copied_string("hello world");
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&one, 1);
  const uint8_t *data;
  size_t len;
  cr_assert_eq(perfc__byte_buffer_flatten(bb, SIZE_MAX, a, &data, &len), 0);
  cr_assert_eq(len, 11);
  cr_assert_eq(memcmp(data, "hello world", 11), 0);
  cr_assert_eq(perfc_arena_used(a), 0, "one slice is read in place");
  grpc_byte_buffer_destroy(bb);

  grpc_slice two[2] = {grpc_slice_from_copied_string("abc"),
                       grpc_slice_from_copied_string("defg")};
  bb = grpc_raw_byte_buffer_create(two, 2);
  cr_assert_eq(perfc__byte_buffer_flatten(bb, SIZE_MAX, a, &data, &len), 0);
  cr_assert_eq(len, 7);
  cr_assert_eq(memcmp(data, "abcdefg", 7), 0);
  grpc_byte_buffer_destroy(bb);

  grpc_slice_unref(two[0]);
  grpc_slice_unref(two[1]);
  grpc_slice_unref(one);
  perfc_arena_free(a);
}

/* `n` bytes of `byte` compressed as gzip (gzip != 0) or zlib ("deflate"),
 * fed in 64 KiB pieces so that a 1 GiB input needs no 1 GiB buffer; the
 * output is split into slices of `slice` bytes. */
static grpc_byte_buffer *compressed(int gzip, size_t n, int byte, size_t slice) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  cr_assert_eq(deflateInit2(&zs, 9, Z_DEFLATED, gzip ? 31 : 15, 9,
                            Z_DEFAULT_STRATEGY), Z_OK);
  static uint8_t in[65536];
  memset(in, byte, sizeof in);
  size_t cap = n / 500 + 4096, out_len = 0;
  uint8_t *out = malloc(cap);
  for (size_t left = n;;) {
    size_t piece = left < sizeof in ? left : sizeof in;
    zs.next_in = in;
    zs.avail_in = (uInt)piece;
    left -= piece;
    int flush = left == 0 ? Z_FINISH : Z_NO_FLUSH;
    int r;
    do {
      if (cap - out_len < 4096)
        out = realloc(out, cap *= 2);
      zs.next_out = out + out_len;
      zs.avail_out = (uInt)(cap - out_len);
      r = deflate(&zs, flush);
      out_len = cap - zs.avail_out;
    } while (zs.avail_out == 0 || (flush == Z_FINISH && r != Z_STREAM_END));
    if (left == 0)
      break;
  }
  deflateEnd(&zs);
  size_t nslices = (out_len + slice - 1) / slice;
  grpc_slice *s = calloc(nslices, sizeof *s);
  for (size_t i = 0; i < nslices; i++) {
    size_t off = i * slice, len = out_len - off < slice ? out_len - off : slice;
    s[i] = grpc_slice_from_copied_buffer((const char *)out + off, len);
  }
  grpc_byte_buffer *bb = grpc_raw_compressed_byte_buffer_create(
      s, nslices, gzip ? GRPC_COMPRESS_GZIP : GRPC_COMPRESS_DEFLATE);
  for (size_t i = 0; i < nslices; i++)
    grpc_slice_unref(s[i]);
  free(s);
  free(out);
  return bb;
}

static long vm_hwm_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
      break;
  if (f != NULL)
    fclose(f);
  return kb;
}

Test(grpc_util, flatten_inflates_gzip_and_deflate_within_the_limit) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 0), 0);
  for (int gzip = 0; gzip <= 1; gzip++) {
    /* 300 KiB of 'x' in 7-byte slices: inflation crosses slice edges. */
    grpc_byte_buffer *bb = compressed(gzip, 300 * 1024, 'x', 7);
    const uint8_t *data;
    size_t len;
    cr_assert_eq(perfc__byte_buffer_flatten(bb, 300 * 1024, a, &data, &len), 0,
                 "exactly the limit passes (gzip=%d)", gzip);
    cr_assert_eq(len, 300 * 1024);
    cr_assert(data[0] == 'x' && data[len - 1] == 'x');
    cr_assert_eq(perfc__byte_buffer_flatten(bb, 300 * 1024 - 1, a, &data, &len),
                 PERFC_ETOOBIG, "one byte over the limit fails (gzip=%d)", gzip);
    grpc_byte_buffer_destroy(bb);
  }
  perfc_arena_free(a);
}

/* #13 item 1: 1 GiB of zeros in ~1 MiB of gzip stops at a 4 MiB limit,
 * having allocated about the limit, not the gigabyte. */
Test(grpc_util, flatten_stops_a_decompression_bomb_at_the_limit, .timeout = 60) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 0), 0);
  for (int gzip = 1; gzip >= 0; gzip--) {
    grpc_byte_buffer *bb = compressed(gzip, (size_t)1 << 30, 0, 16384);
    size_t wire = grpc_byte_buffer_length(bb);
    cr_assert_lt(wire, 2u << 20, "the bomb is small on the wire: %zu", wire);
    long before = vm_hwm_kb();
    const uint8_t *data;
    size_t len;
    cr_assert_eq(perfc__byte_buffer_flatten(bb, 4 << 20, a, &data, &len),
                 PERFC_ETOOBIG);
    long grew = vm_hwm_kb() - before;
    cr_assert_lt(grew, 12 * 1024, "peak RSS grew %ld KiB (gzip=%d)", grew, gzip);
    cr_assert_eq(perfc_arena_used(a), 0, "nothing of a refused message is kept");
    grpc_byte_buffer_destroy(bb);
  }
  perfc_arena_free(a);
}

Test(grpc_util, flatten_refuses_corrupt_truncated_and_lying_compressed_data) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 0), 0);
  const uint8_t *data;
  size_t len;
  /* Truncated: the last 10 bytes of a gzip member cut off. */
  grpc_byte_buffer *bb = compressed(1, 100000, 'y', 1 << 20);
  grpc_slice whole = bb->data.raw.slice_buffer.slices[0];
  grpc_slice cut = grpc_slice_sub(whole, 0, GRPC_SLICE_LENGTH(whole) - 10);
  grpc_byte_buffer *t =
      grpc_raw_compressed_byte_buffer_create(&cut, 1, GRPC_COMPRESS_GZIP);
  cr_assert_eq(perfc__byte_buffer_flatten(t, SIZE_MAX, a, &data, &len),
               PERFC_EPARSE);
  grpc_byte_buffer_destroy(t);
  /* Trailing bytes after the end of the stream. */
  grpc_slice parts[2] = {grpc_slice_ref(whole),
                         grpc_slice_from_copied_string("junk")};
  t = grpc_raw_compressed_byte_buffer_create(parts, 2, GRPC_COMPRESS_GZIP);
  cr_assert_eq(perfc__byte_buffer_flatten(t, SIZE_MAX, a, &data, &len),
               PERFC_EPARSE);
  grpc_byte_buffer_destroy(t);
  /* ISIZE says 16 bytes; the data inflates to 100000: the guess only
   * sizes the first buffer, the limit still holds and so does the data. */
  grpc_slice lie = grpc_slice_malloc(GRPC_SLICE_LENGTH(whole));
  memcpy(GRPC_SLICE_START_PTR(lie), GRPC_SLICE_START_PTR(whole),
         GRPC_SLICE_LENGTH(whole));
  uint8_t *isize = GRPC_SLICE_START_PTR(lie) + GRPC_SLICE_LENGTH(lie) - 4;
  isize[0] = 16, isize[1] = isize[2] = isize[3] = 0;
  t = grpc_raw_compressed_byte_buffer_create(&lie, 1, GRPC_COMPRESS_GZIP);
  cr_assert_eq(perfc__byte_buffer_flatten(t, 50000, a, &data, &len),
               PERFC_ETOOBIG);
  cr_assert_eq(perfc__byte_buffer_flatten(t, SIZE_MAX, a, &data, &len),
               PERFC_EPARSE, "the gzip trailer check catches the lie");
  grpc_byte_buffer_destroy(t);
  /* Not compressed data at all. */
  grpc_slice junk = grpc_slice_from_copied_string("definitely not deflate");
  t = grpc_raw_compressed_byte_buffer_create(&junk, 1, GRPC_COMPRESS_DEFLATE);
  cr_assert_eq(perfc__byte_buffer_flatten(t, SIZE_MAX, a, &data, &len),
               PERFC_EPARSE);
  grpc_byte_buffer_destroy(t);
  /* Uncompressed but over the limit. */
  t = grpc_raw_byte_buffer_create(&junk, 1);
  cr_assert_eq(perfc__byte_buffer_flatten(t, 5, a, &data, &len), PERFC_ETOOBIG);
  grpc_byte_buffer_destroy(t);
  grpc_slice_unref(junk);
  grpc_slice_unref(lie);
  grpc_slice_unref(cut);
  grpc_slice_unref(parts[0]);
  grpc_slice_unref(parts[1]);
  grpc_byte_buffer_destroy(bb);
  perfc_arena_free(a);
}

Test(grpc_util, pack_round_trips) {
  Google__Protobuf__StringValue v = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
  v.value = "payload";
  grpc_byte_buffer *bb = perfc__pack(&v.base);
  cr_assert_eq(grpc_byte_buffer_length(bb), protobuf_c_message_get_packed_size(&v.base));
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 0), 0);
  const uint8_t *data;
  size_t len;
  cr_assert_eq(perfc__byte_buffer_flatten(bb, SIZE_MAX, a, &data, &len), 0);
  Google__Protobuf__StringValue *back = google__protobuf__string_value__unpack(NULL, len, data);
  cr_assert_not_null(back);
  cr_assert_str_eq(back->value, "payload");
  google__protobuf__string_value__free_unpacked(back, NULL);
  grpc_byte_buffer_destroy(bb);
  perfc_arena_free(a);
}

Test(grpc_util, deadlines) {
  cr_assert_eq(perfc__remaining_ms(perfc__deadline_from_ms(-1)), INT64_MAX);
  int64_t left = perfc__remaining_ms(perfc__deadline_from_ms(5000));
  cr_assert(left > 4000 && left <= 5000, "%lld", (long long)left);
  cr_assert_eq(perfc__remaining_ms(perfc__deadline_from_ms(0)), 0);
  int64_t t0 = perfc__now_ns(), t1 = perfc__now_ns();
  cr_assert_geq(t1, t0);
}

Test(grpc_util, metadata_checks) {
  cr_assert_eq(perfc__check_metadata("x-ok", "value", 5), 0);
  cr_assert_eq(perfc__check_metadata("x-bin", "\x00\xff", 2), 0, "-bin may be binary");
  cr_assert_eq(perfc__check_metadata("X-Upper", "v", 1), PERFC_EINVAL);
  cr_assert_eq(perfc__check_metadata("grpc-status", "0", 1), PERFC_EINVAL, "reserved prefix");
  cr_assert_eq(perfc__check_metadata("x-nl", "a\nb", 3), PERFC_EINVAL);
  cr_assert_eq(perfc__check_metadata("", "v", 1), PERFC_EINVAL);
  cr_assert_eq(perfc__check_metadata(NULL, "v", 1), PERFC_EINVAL);
}
