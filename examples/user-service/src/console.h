/*
 * console.h — the web console: user.v1.ConsoleService's GetConsole answers
 * `GET /` with src/console.html (compiled in by CMakeLists.txt), a page
 * that lists, creates and edits users through the JSON routes.
 *
 * Room: examples/user-service.
 */
#ifndef USER_SERVICE_CONSOLE_H
#define USER_SERVICE_CONSOLE_H

#include "perfc/server.h"

#include <stddef.h>

/** The page's bytes (console_embedded.c, generated). */
extern const unsigned char user_console_html[];
extern const size_t user_console_html_len;

/** Registers user.v1.ConsoleService on `srv` (before perfc_server_start()).
 *  Returns 0 or the registration's PERFC_E*. */
int user_console_register(perfc_server *srv);

#endif
