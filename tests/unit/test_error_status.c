/* test_error_status.c — runtime/src/core/error.c and status.c: tables stay consistent. */
#include <criterion/criterion.h>
#include <perfc/common.h>
#include <perfc/status.h>
#include <string.h>

Test(error, every_code_has_name_and_message) {
#define XX(name, value, msg)                                                   \
  cr_assert_str_eq(perfc_err_name(value), #name);                              \
  cr_assert_str_eq(perfc_strerror(value), msg);                                \
  cr_assert_lt(value, 0);
  PERFC_ERRNO_MAP(XX)
#undef XX
  cr_assert_str_eq(perfc_strerror(0), "success");
  cr_assert_str_eq(perfc_strerror(-9999), "unknown error");
  cr_assert_str_eq(perfc_err_name(12345), "EUNKNOWN");
}

Test(error, codes_are_never_renumbered) {
  /* Pinned values: changing one breaks users' compiled code. */
  cr_assert_eq(PERFC_EINVAL, -1);
  cr_assert_eq(PERFC_ENOMEM, -2);
  cr_assert_eq(PERFC_EFULL, -6);
  cr_assert_eq(PERFC_ECONFIG, -16);
}

Test(status, names_match_grpc_and_go) {
  cr_assert_str_eq(perfc_status_name(PERFC_STATUS_NOT_FOUND), "NOT_FOUND");
  cr_assert_str_eq(perfc_status_go_name(PERFC_STATUS_CANCELLED), "Canceled");
  cr_assert_str_eq(perfc_status_go_name(PERFC_STATUS_DEADLINE_EXCEEDED),
                   "DeadlineExceeded");
  cr_assert_str_eq(perfc_status_go_name(PERFC_STATUS_UNAUTHENTICATED),
                   "Unauthenticated");
  cr_assert_eq(PERFC_STATUS_UNAUTHENTICATED, 16);
  cr_assert_str_eq(perfc_status_name(99), "UNKNOWN_CODE");
  cr_assert_str_eq(perfc_status_go_name(-1), "Unknown");
  for (int c = 0; c < PERFC_STATUS_COUNT; c++) {
    cr_assert_not_null(perfc_status_name(c));
    cr_assert_not_null(perfc_status_go_name(c));
  }
}

Test(status, reset_frees_message) {
  perfc_status st = {PERFC_STATUS_INTERNAL, strdup("boom")};
  perfc_status_reset(&st);
  cr_assert_eq(st.code, PERFC_STATUS_OK);
  cr_assert_null(st.message);
  perfc_status_reset(NULL);
}

Test(version, runtime_matches_header) {
  cr_assert_eq(perfc_version(), PERFC_VERSION_NUMBER);
}
