/*
 * console.c — user.v1.ConsoleService: the page as a google.api.HttpBody,
 * which the HTTP listener answers as text/html (docs/http-json.md,
 * "Answers that are not JSON"). Over gRPC the same method returns the
 * message itself.
 *
 * Room: examples/user-service.
 */
#include "console.h"

#include "user/v1/console.perfc.h"

static perfc_status_code get_console(perfc_ctx *ctx,
                                     const User__V1__GetConsoleRequest *req,
                                     Google__Api__HttpBody *resp, void *ud) {
  (void)ctx;
  (void)req;
  (void)ud;
  /* The page is static: point at it, nothing is copied. */
  resp->content_type = "text/html; charset=utf-8";
  resp->data.data = (uint8_t *)user_console_html;
  resp->data.len = user_console_html_len;
  return PERFC_STATUS_OK;
}

static const User__V1__ConsoleService_Handlers console_handlers = {
    .get_console = get_console,
};

int user_console_register(perfc_server *srv) {
  return user__v1__console_service__perfc_register(srv, &console_handlers,
                                                   NULL);
}
