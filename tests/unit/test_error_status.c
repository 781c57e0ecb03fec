/* test_error_status.c — runtime/src/core/error.c and status.c: tables stay consistent. */
#include <criterion/criterion.h>
#include <perfc/common.h>
#include <perfc/status.h>
#include <pthread.h>
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
  cr_assert_eq(PERFC_EUNAVAILABLE, -17);
  cr_assert_eq(PERFC_EABORTED, -18);
  cr_assert_eq(PERFC_EPRECONDITION, -19);
  cr_assert_eq(PERFC_EINTERNAL, -20);
}

Test(error, detail_is_what_the_failing_call_left) {
  cr_assert_eq(perfc_error_set(PERFC_EINVAL, NULL, -1, "cache.ttl: %d is negative", -5),
               PERFC_EINVAL);
  cr_assert_str_eq(perfc_last_error(), "cache.ttl: -5 is negative");
  perfc_error_detail d = perfc_last_error_detail();
  cr_assert_eq(d.code, PERFC_EINVAL);
  cr_assert_str_eq(d.sqlstate, "");
  cr_assert_eq(d.index, -1);

  perfc_error_set(PERFC_EEXIST, "23505x", 3, "duplicate key");
  d = perfc_last_error_detail();
  cr_assert_eq(d.code, PERFC_EEXIST);
  cr_assert_str_eq(d.sqlstate, "23505", "SQLSTATE is five characters");
  cr_assert_eq(d.index, 3);

  /* No format: the code's own message. */
  perfc_error_set(PERFC_ETIMEDOUT, NULL, -1, NULL);
  cr_assert_str_eq(perfc_last_error(), "timed out");
}

Test(error, long_messages_are_cut_not_overflowed) {
  char big[4 * PERFC_ERROR_MESSAGE_MAX];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  perfc_error_set(PERFC_EIO, NULL, -1, "%s", big);
  cr_assert_eq(strlen(perfc_last_error()), PERFC_ERROR_MESSAGE_MAX - 1);
}

static void *fail_on_other_thread(void *arg) {
  (void)arg;
  perfc_error_set(PERFC_ENOMEM, NULL, -1, "other thread");
  return NULL;
}

Test(error, detail_is_per_thread) {
  perfc_error_set(PERFC_ENOENT, NULL, -1, "this thread");
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, fail_on_other_thread, NULL), 0);
  pthread_join(t, NULL);
  cr_assert_str_eq(perfc_last_error(), "this thread");
  cr_assert_eq(perfc_last_error_detail().code, PERFC_ENOENT);
}

Test(status, from_error_maps_every_code) {
  cr_assert_eq(perfc_status_from_error(0), PERFC_STATUS_OK);
  cr_assert_eq(perfc_status_from_error(PERFC_EINVAL), PERFC_STATUS_INVALID_ARGUMENT);
  cr_assert_eq(perfc_status_from_error(PERFC_EPARSE), PERFC_STATUS_INVALID_ARGUMENT);
  cr_assert_eq(perfc_status_from_error(PERFC_ENOENT), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(perfc_status_from_error(PERFC_EEXIST), PERFC_STATUS_ALREADY_EXISTS);
  cr_assert_eq(perfc_status_from_error(PERFC_ETIMEDOUT), PERFC_STATUS_DEADLINE_EXCEEDED);
  cr_assert_eq(perfc_status_from_error(PERFC_EFULL), PERFC_STATUS_RESOURCE_EXHAUSTED);
  cr_assert_eq(perfc_status_from_error(PERFC_EUNAVAILABLE), PERFC_STATUS_UNAVAILABLE);
  cr_assert_eq(perfc_status_from_error(PERFC_ESHUTDOWN), PERFC_STATUS_UNAVAILABLE);
  cr_assert_eq(perfc_status_from_error(PERFC_EIO), PERFC_STATUS_UNAVAILABLE);
  cr_assert_eq(perfc_status_from_error(PERFC_EABORTED), PERFC_STATUS_ABORTED);
  cr_assert_eq(perfc_status_from_error(PERFC_EPRECONDITION),
               PERFC_STATUS_FAILED_PRECONDITION);
  cr_assert_eq(perfc_status_from_error(PERFC_ETOOBIG), PERFC_STATUS_OUT_OF_RANGE);
  cr_assert_eq(perfc_status_from_error(PERFC_EINTERNAL), PERFC_STATUS_INTERNAL);
  cr_assert_eq(perfc_status_from_error(PERFC_ENOMEM), PERFC_STATUS_INTERNAL);
  cr_assert_eq(perfc_status_from_error(-9999), PERFC_STATUS_INTERNAL);
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
