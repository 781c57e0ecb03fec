/* test_server.c — runtime/src/server/server.c: option defaults and lifecycle
 * errors. Request handling is covered by tests/integration with generated
 * code. */
#include <criterion/criterion.h>
#include "test_transport.h" /* test_server_new: both transports */
#include <perfc/log.h>
#include <perfc/server.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

Test(server, option_defaults) {
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  cr_assert_eq(o.threads, (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
  cr_assert_eq(o.requests_per_method, PERFC_DEFAULT_REQUESTS_PER_METHOD);
  cr_assert_eq(o.default_executor, PERFC_EXEC_INLINE);
  cr_assert_eq(o.keepalive_time_ms, 2 * 60 * 60 * 1000);
  cr_assert_eq(o.keepalive_timeout_ms, 20000);
  cr_assert_eq(o.min_ping_interval_ms, 10000);
  cr_assert_eq(o.max_concurrent_streams, 1024);
  cr_assert_eq(o.max_recv_message_bytes, 4 * 1024 * 1024);
  cr_assert_eq(o.max_send_message_bytes, 4 * 1024 * 1024);
  cr_assert_eq(o.max_connection_idle_ms, 0);
  cr_assert_eq(o.max_connection_age_ms, 0);
  cr_assert_eq(o.max_connection_idle_enabled, 0);
  cr_assert_eq(o.max_connection_age_enabled, 0);
  cr_assert_eq(o.shutdown_grace_ms, 5000);
  cr_assert_eq(o.keepalive_permit_without_calls, 0);
  cr_assert_eq(o.tcp_tx_zerocopy, 0);
  cr_assert_eq(o.channelz, 0);
}

static const perfc_service_desc empty_svc = {.name = "test.Empty"};
static const int no_handlers;

Test(server, lifecycle_errors) {
  perfc_server *s;
  cr_assert_eq(perfc_server_new(NULL, NULL), PERFC_EINVAL);
  perfc_server_opts bad = {.default_executor = (perfc_executor)7};
  cr_assert_eq(test_server_new(&s, &bad), PERFC_EINVAL);

  cr_assert_eq(test_server_new(&s, NULL), 0);
  cr_assert_eq(perfc_server_start(s), PERFC_ESTATE, "no address yet");
  cr_assert_eq(perfc_server_listen(s, "256.1.1.1:1", NULL), PERFC_EBIND);
  int port = 0;
  cr_assert_eq(perfc_server_listen(s, "127.0.0.1:0", &port), 0);
  cr_assert_gt(port, 0);
  cr_assert_eq(perfc_server_add_service(s, &empty_svc, &no_handlers, NULL), 0);
  cr_assert_eq(perfc_server_add_service(s, &empty_svc, &no_handlers, NULL),
               PERFC_EEXIST);
  cr_assert_eq(perfc_server_add_service(s, NULL, &no_handlers, NULL),
               PERFC_EINVAL);

  /* A second server cannot take the same port. */
  perfc_server *s2;
  cr_assert_eq(test_server_new(&s2, NULL), 0);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_server_listen(s2, addr, NULL), PERFC_EBIND);
  perfc_server_free(s2);

  cr_assert_eq(perfc_server_start(s), 0);
  cr_assert_eq(perfc_server_start(s), PERFC_ESTATE);
  cr_assert_eq(perfc_server_listen(s, "127.0.0.1:0", NULL), PERFC_ESTATE);
  cr_assert_eq(perfc_server_add_service(s, &empty_svc, &no_handlers, NULL),
               PERFC_ESTATE);
  perfc_server_shutdown(s, 100);
  perfc_server_shutdown(s, 100); /* idempotent */
  cr_assert_eq(perfc_server_run(s), PERFC_ESTATE);
  perfc_server_free(s);
  perfc_server_free(NULL);
}

Test(server, free_without_start) {
  perfc_server *s;
  cr_assert_eq(test_server_new(&s, NULL), 0);
  cr_assert_eq(perfc_server_listen(s, "127.0.0.1:0", NULL), 0);
  perfc_server_free(s);
}

static int hook_calls, hook_frees;
static void count_hook(perfc_server *srv, void *ud) {
  cr_assert_not_null(srv);
  hook_calls += *(int *)ud;
}
static void count_free(void *ud) { hook_frees += *(int *)ud; }

Test(server, shutdown_hooks_and_service_list) {
  static int one = 1, ten = 10;
  hook_calls = hook_frees = 0;
  perfc_server *s;
  cr_assert_eq(test_server_new(&s, NULL), 0);
  cr_assert_eq(perfc_server_listen(s, "127.0.0.1:0", NULL), 0);
  cr_assert_eq(perfc_server_service_count(s), 0);
  cr_assert_null(perfc_server_service_at(s, 0));
  cr_assert_eq(perfc_server_add_service(s, &empty_svc, &no_handlers, NULL), 0);
  cr_assert_eq(perfc_server_service_count(s), 1);
  cr_assert_eq(perfc_server_service_at(s, 0), &empty_svc);
  cr_assert_null(perfc_server_service_at(s, 1));

  cr_assert_eq(perfc_server_add_shutdown_hook(NULL, count_hook, &one, NULL),
               PERFC_EINVAL);
  cr_assert_eq(perfc_server_add_shutdown_hook(s, NULL, &one, NULL),
               PERFC_EINVAL);
  cr_assert_eq(perfc_server_add_shutdown_hook(s, count_hook, &one, NULL), 0);
  /* Destructor only: called at free, never as a hook. */
  cr_assert_eq(perfc_server_add_shutdown_hook(s, NULL, &ten, count_free), 0);
  cr_assert_eq(perfc_server_start(s), 0);
  cr_assert_eq(perfc_server_add_shutdown_hook(s, count_hook, &one, NULL),
               PERFC_ESTATE);
  cr_assert_eq(hook_calls, 0);
  perfc_server_shutdown(s, 100);
  cr_assert_eq(hook_calls, 1);
  perfc_server_shutdown(s, 100);
  cr_assert_eq(hook_calls, 1, "hooks run once");
  cr_assert_eq(hook_frees, 0, "user data lives until free");
  perfc_server_free(s);
  cr_assert_eq(hook_frees, 10);

  /* A server that never started runs no hook but still frees. */
  hook_calls = hook_frees = 0;
  cr_assert_eq(test_server_new(&s, NULL), 0);
  cr_assert_eq(perfc_server_add_shutdown_hook(s, count_hook, &one, count_free), 0);
  perfc_server_free(s);
  cr_assert_eq(hook_calls, 0);
  cr_assert_eq(hook_frees, 1);
}

static int start_calls;
static int start_hook_fn(perfc_server *srv, void *ud) {
  cr_assert_not_null(srv);
  start_calls++;
  return *(int *)ud;
}

Test(server, start_hooks) {
  static int fail = PERFC_ECONFIG, ok = 0;
  start_calls = 0;
  perfc_server *s;
  cr_assert_eq(test_server_new(&s, NULL), 0);
  cr_assert_eq(perfc_server_listen(s, "127.0.0.1:0", NULL), 0);
  cr_assert_eq(perfc_server_add_start_hook(s, NULL, NULL), PERFC_EINVAL);
  cr_assert_eq(perfc_server_add_start_hook(s, start_hook_fn, &ok), 0);
  cr_assert_eq(perfc_server_add_start_hook(s, start_hook_fn, &fail), 0);
  cr_assert_eq(perfc_server_add_start_hook(s, start_hook_fn, &ok), 0);
  /* The second hook fails the start; the third is not called. */
  cr_assert_eq(perfc_server_start(s), PERFC_ECONFIG);
  cr_assert_eq(start_calls, 2);
  perfc_server_free(s);

  start_calls = 0;
  cr_assert_eq(test_server_new(&s, NULL), 0);
  cr_assert_eq(perfc_server_listen(s, "127.0.0.1:0", NULL), 0);
  cr_assert_eq(perfc_server_add_start_hook(s, start_hook_fn, &ok), 0);
  cr_assert_eq(perfc_server_start(s), 0);
  cr_assert_eq(start_calls, 1);
  cr_assert_eq(perfc_server_add_start_hook(s, start_hook_fn, &ok), PERFC_ESTATE);
  perfc_server_free(s);
}

/* Every line logged at WARN or above while a busy port is refused. */
static char bind_logged[8][1024];
static int bind_nlogged;

static void bind_capture(perfc_log_level level, const char *msg, void *ud) {
  (void)ud;
  if (level >= PERFC_LOG_WARN && bind_nlogged < 8)
    snprintf(bind_logged[bind_nlogged++], sizeof bind_logged[0], "%s", msg);
}

/* Regression: a busy gRPC port logged the core's 600-byte status dump at
 * WARN and then "server: cannot listen on ADDR" with no reason. Now one
 * line at ERROR naming the address and the reason. */
Test(server, busy_port_is_said_once_with_the_reason) {
  perfc_server *s, *s2;
  int port = 0;
  cr_assert_eq(test_server_new(&s, NULL), 0);
  cr_assert_eq(perfc_server_listen(s, "127.0.0.1:0", &port), 0);
  cr_assert_eq(test_server_new(&s2, NULL), 0);
  char addr[64], want[128];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  snprintf(want, sizeof want,
           "level=error msg=\"server: cannot listen on 127.0.0.1:%d: address "
           "already in use\"",
           port);
  perfc_log_set_sink(bind_capture, NULL);
  int rc = perfc_server_listen(s2, addr, NULL);
  perfc_log_set_sink(NULL, NULL);
  cr_assert_eq(rc, PERFC_EBIND);
  cr_assert_eq(bind_nlogged, 1, "logged %d lines, first: %s", bind_nlogged,
               bind_logged[0]);
  cr_assert_not_null(strstr(bind_logged[0], want), "%s", bind_logged[0]);
  perfc_server_free(s2);
  perfc_server_free(s);
}

/* Off is a field (docs/design.md, "API style"): a duration without its
 * enabled flag, or the flag without a duration, is refused with a message,
 * not silently ignored. */
Test(server_opts, connection_idle_and_age_need_enabled_and_duration) {
  perfc_server *s = NULL;
  perfc_server_opts o = {.max_connection_idle_ms = 300};
  cr_assert_eq(test_server_new(&s, &o), PERFC_EINVAL);
  cr_assert_null(s);
  cr_assert_not_null(strstr(perfc_last_error(), "max_connection_idle_enabled"));
  o = (perfc_server_opts){.max_connection_age_enabled = 1};
  cr_assert_eq(test_server_new(&s, &o), PERFC_EINVAL);
  cr_assert_not_null(strstr(perfc_last_error(), "max_connection_age_enabled"));
  o = (perfc_server_opts){.max_connection_age_enabled = 1,
                          .max_connection_age_ms = 1000,
                          .max_connection_idle_enabled = 1,
                          .max_connection_idle_ms = 1000};
  cr_assert_eq(test_server_new(&s, &o), 0);
  perfc_server_free(s);
}

/* busy_poll_us outside 0..PERFC_MAX_BUSY_POLL_US is refused, naming it. */
Test(server_opts, busy_poll_out_of_range_is_refused) {
  perfc_server *s = NULL;
  perfc_server_opts o = {.busy_poll_us = PERFC_MAX_BUSY_POLL_US + 1};
  cr_assert_eq(test_server_new(&s, &o), PERFC_EINVAL);
  cr_assert_null(s);
  cr_assert_not_null(strstr(perfc_last_error(), "busy_poll_us"));
  o = (perfc_server_opts){.busy_poll_us = -1};
  cr_assert_eq(test_server_new(&s, &o), PERFC_EINVAL);
  o = (perfc_server_opts){.busy_poll_us = 50};
  cr_assert_eq(test_server_new(&s, &o), 0);
  perfc_server_free(s);
}

/* A bad executor is refused with a message naming the field. */
Test(server_opts, bad_executor_is_refused_with_a_message) {
  perfc_server *s = NULL;
  perfc_server_opts o = {.default_executor = (perfc_executor)42};
  cr_assert_eq(test_server_new(&s, &o), PERFC_EINVAL);
  cr_assert_null(s);
  cr_assert_not_null(strstr(perfc_last_error(), "default_executor"));
}

/* ---- SIGINT/SIGTERM around the start (interop.grpcio_tls: a server sent
 * SIGTERM right after it printed "listening on" died of it, -15) ---- */

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* A started server in this (child) process; exits 10+ on a setup error. */
static perfc_server *child_server(void) {
  perfc_server *s;
  if (test_server_new(&s, NULL) != 0)
    _exit(10);
  if (perfc_server_listen(s, "127.0.0.1:0", NULL) != 0)
    _exit(11);
  if (perfc_server_start(s) != 0)
    _exit(12);
  return s;
}

/* Runs `body` in a child process; returns its wait status. */
static int in_child(void (*body)(void)) {
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    body();
    _exit(0);
  }
  int st = 0;
  cr_assert_eq(waitpid(pid, &st, 0), pid);
  return st;
}

/* The documented program: start, (print the address), run. The signal
 * lands between the start and the run: run must shut down and return
 * it, and the program exit 0. */
static void signal_between_start_and_run(void) {
  perfc_server *s = child_server();
  kill(getpid(), SIGTERM);
  sleep_ms(20); /* the "printf" between start and run, and then some */
  int sig = perfc_server_run(s);
  perfc_server_free(s);
  _exit(sig == SIGTERM ? 0 : 3);
}

Test(server_signals, sigterm_between_start_and_run_shuts_down_cleanly) {
  for (int i = 0; i < 5; i++) {
    int st = in_child(signal_between_start_and_run);
    cr_assert(WIFEXITED(st), "round %d: died of signal %d", i,
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert_eq(WEXITSTATUS(st), 0, "round %d: exit %d", i, WEXITSTATUS(st));
  }
}

/* perfc_server_hold_signals() first in main(): a signal during the whole
 * start-up waits for the run. */
static void signal_before_new(void) {
  if (perfc_server_hold_signals() != 0)
    _exit(13);
  kill(getpid(), SIGINT);
  perfc_server *s = child_server();
  int sig = perfc_server_run(s);
  perfc_server_free(s);
  _exit(sig == SIGINT ? 0 : 3);
}

Test(server_signals, a_signal_during_start_up_is_held_for_the_run) {
  int st = in_child(signal_before_new);
  cr_assert(WIFEXITED(st), "died of signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  cr_assert_eq(WEXITSTATUS(st), 0, "exit %d", WEXITSTATUS(st));
}

/* Only one is held: a second before the run kills, as without perfc. */
static void two_signals_before_run(void) {
  perfc_server *s = child_server();
  kill(getpid(), SIGTERM);
  kill(getpid(), SIGTERM);
  sleep_ms(200);
  perfc_server_free(s);
  _exit(4); /* not reached: the second signal's default action */
}

Test(server_signals, a_second_signal_before_the_run_kills_as_before) {
  int st = in_child(two_signals_before_run);
  cr_assert(WIFSIGNALED(st), "exited %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  cr_assert_eq(WTERMSIG(st), SIGTERM);
}

/* A program that never runs (it waits some other way): a held signal is
 * not lost; its shutdown delivers it with the default action. */
static void held_then_shutdown_without_run(void) {
  perfc_server *s = child_server();
  kill(getpid(), SIGTERM);
  sleep_ms(20);
  perfc_server_shutdown(s, 0);
  _exit(5); /* not reached */
}

Test(server_signals, a_held_signal_no_run_takes_is_delivered_at_shutdown) {
  int st = in_child(held_then_shutdown_without_run);
  cr_assert(WIFSIGNALED(st), "exited %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  cr_assert_eq(WTERMSIG(st), SIGTERM);
}

/* An application's own handler is its own: the start does not take it. */
static volatile sig_atomic_t app_got;
static void app_handler(int sig) { app_got = sig; }
static void app_handler_kept(void) {
  signal(SIGTERM, app_handler);
  perfc_server *s = child_server();
  kill(getpid(), SIGTERM);
  sleep_ms(20);
  perfc_server_shutdown(s, 0);
  perfc_server_free(s);
  _exit(app_got == SIGTERM ? 0 : 6);
}

Test(server_signals, the_applications_own_handler_is_left_alone) {
  int st = in_child(app_handler_kept);
  cr_assert(WIFEXITED(st), "died of signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  cr_assert_eq(WEXITSTATUS(st), 0, "exit %d", WEXITSTATUS(st));
}

/* Every thread a started server has, other than the application's, blocks
 * SIGINT and SIGTERM (SigBlk in /proc/self/task/TID/status). Exit 7+n:
 * n threads do not. */
static void threads_block(void) {
  perfc_server *s = child_server();
  DIR *d = opendir("/proc/self/task");
  if (d == NULL)
    _exit(14);
  int bad = 0, others = 0;
  struct dirent *e;
  unsigned long long want = (1ull << (SIGINT - 1)) | (1ull << (SIGTERM - 1));
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || atoi(e->d_name) == getpid())
      continue;
    char path[300], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
      continue; /* the thread ended */
    others++;
    char name[256] = "";
    while (fgets(line, sizeof line, f) != NULL) {
      if (strncmp(line, "Name:", 5) == 0)
        snprintf(name, sizeof name, "%s", line + 5);
      if (strncmp(line, "SigBlk:", 7) == 0 &&
          (strtoull(line + 7, NULL, 16) & want) != want) {
        bad++;
        fprintf(stderr, "thread %s (%.*s): %s", e->d_name,
                (int)strcspn(name, "\n"), name, line);
      }
    }
    fclose(f);
  }
  closedir(d);
  perfc_server_free(s);
  _exit(others == 0 ? 15 : bad > 0 ? 7 + (bad > 100 ? 100 : bad) : 0);
}

Test(server_signals, every_thread_a_server_starts_blocks_sigint_and_sigterm) {
  int st = in_child(threads_block);
  cr_assert(WIFEXITED(st));
  cr_assert_eq(WEXITSTATUS(st), 0, "exit %d (7+n: n threads take the signals)",
               WEXITSTATUS(st));
}

