/* test_grpc_util.c — runtime/src/transport/core/grpc_util.c: byte-buffer flattening
 * (single slice without a copy, several slices), packing,
 * deadlines, metadata checks. */
#include "server/server_internal.h"

#include <criterion/criterion.h>
#include <google/protobuf/wrappers.pb-c.h>
#include <string.h>

TestSuite(grpc_util, .init = grpc_init, .fini = grpc_shutdown);

Test(grpc_util, flatten_single_slice_in_place_and_several_slices) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 0), 0);
  grpc_slice one = grpc_slice_from_copied_string("hello world");
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&one, 1);
  const uint8_t *data;
  size_t len;
  cr_assert_eq(perfc__byte_buffer_flatten(bb, a, &data, &len), 0);
  cr_assert_eq(len, 11);
  cr_assert_eq(memcmp(data, "hello world", 11), 0);
  cr_assert_eq(perfc_arena_used(a), 0, "one slice is read in place");
  grpc_byte_buffer_destroy(bb);

  grpc_slice two[2] = {grpc_slice_from_copied_string("abc"),
                       grpc_slice_from_copied_string("defg")};
  bb = grpc_raw_byte_buffer_create(two, 2);
  cr_assert_eq(perfc__byte_buffer_flatten(bb, a, &data, &len), 0);
  cr_assert_eq(len, 7);
  cr_assert_eq(memcmp(data, "abcdefg", 7), 0);
  grpc_byte_buffer_destroy(bb);

  grpc_slice_unref(two[0]);
  grpc_slice_unref(two[1]);
  grpc_slice_unref(one);
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
  cr_assert_eq(perfc__byte_buffer_flatten(bb, a, &data, &len), 0);
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
