/*
 * redis_server.h — starts and stops a private redis-server on loopback for
 * the data-layer tests (test_redis.c, test_cache.c).
 *
 * Room: unit test helpers. Header-only (static functions) because the unit
 * CMakeLists builds one executable per test_*.c file.
 *
 * The server runs in a fresh temporary directory with persistence off
 * (--save '' --appendonly no) on a free port picked by binding port 0 and
 * releasing it (retried if another process takes the port first). It is
 * started with PR_SET_PDEATHSIG so that a crashed or killed test does not
 * leave it running, and every wait is bounded.
 */
#ifndef PERFC_TEST_REDIS_SERVER_H
#define PERFC_TEST_REDIS_SERVER_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TR_MAX_EXTRA 16

typedef struct test_redis {
  pid_t pid;
  int port;
  char dir[64];
  /* More redis-server arguments (e.g. "--requirepass", "pw"), NULL-ended;
   * set by tr_start_args(), kept for tr_restart(). */
  const char *extra[TR_MAX_EXTRA + 1];
} test_redis;

static int tr_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

/* Connects and sends PING; 1 when +PONG (or -NOAUTH, from a server with
 * requirepass) came back within ~200 ms. */
static int tr_ping(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return 0;
  struct timeval tv = {0, 200000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  int ok = 0;
  char buf[16];
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      send(fd, "PING\r\n", 6, MSG_NOSIGNAL) == 6 &&
      recv(fd, buf, sizeof buf, 0) >= 5 &&
      (memcmp(buf, "+PONG", 5) == 0 || memcmp(buf, "-NOAU", 5) == 0))
    ok = 1;
  close(fd);
  return ok;
}

static void tr_sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* Starts redis-server on tr->port (picked when 0). Returns 0 once it
 * answers PING, -1 if it did not within 5 s. */
static int tr_start_on(test_redis *tr) {
  char port[16];
  snprintf(port, sizeof port, "%d", tr->port);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    const char *argv[16 + TR_MAX_EXTRA + 1] = {
        "redis-server", "--port",       port,     "--bind",
        "127.0.0.1",    "--save",       "",       "--appendonly",
        "no",           "--dir",        tr->dir,  "--daemonize",
        "no",           "--protected-mode", "no"};
    int argc = 15;
    for (int i = 0; i < TR_MAX_EXTRA && tr->extra[i]; i++)
      argv[argc++] = tr->extra[i];
    argv[argc] = NULL;
    execvp("redis-server", (char *const *)argv);
    _exit(127);
  }
  tr->pid = pid;
  for (int i = 0; i < 250; i++) {
    if (tr_ping(tr->port))
      return 0;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) { /* died: port taken? */
      tr->pid = 0;
      return -1;
    }
    tr_sleep_ms(20);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  tr->pid = 0;
  return -1;
}

/* Picks a port and starts the server, trying a few ports (tr->extra
 * set, the rest zero). */
static int tr_start_picked(test_redis *tr) {
  snprintf(tr->dir, sizeof tr->dir, "/tmp/perfc-redis-XXXXXX");
  if (!mkdtemp(tr->dir))
    return -1;
  for (int attempt = 0; attempt < 5; attempt++) {
    tr->port = tr_free_port();
    if (tr->port > 0 && tr_start_on(tr) == 0)
      return 0;
  }
  return -1;
}

/* Picks a port and starts the server, trying a few ports. */
static int tr_start(test_redis *tr) {
  memset(tr, 0, sizeof *tr);
  return tr_start_picked(tr);
}

/* tr_start() with more redis-server arguments: `extra` (borrowed until
 * tr_stop(); NULL-ended, at most TR_MAX_EXTRA). */
__attribute__((unused)) static int tr_start_args(test_redis *tr,
                                                 const char *const *extra) {
  memset(tr, 0, sizeof *tr);
  for (int i = 0; extra && extra[i] && i < TR_MAX_EXTRA; i++)
    tr->extra[i] = extra[i];
  return tr_start_picked(tr);
}

/* Kills the server at once (SIGKILL: no goodbye to the clients). The port
 * is kept for tr_restart(). */
static void tr_kill(test_redis *tr) {
  if (tr->pid > 0) {
    kill(tr->pid, SIGKILL);
    waitpid(tr->pid, NULL, 0);
    tr->pid = 0;
  }
}

/* Starts the server again on the same port (a restart after tr_kill). */
static int tr_restart(test_redis *tr) {
  for (int attempt = 0; attempt < 50; attempt++) {
    if (tr_start_on(tr) == 0)
      return 0;
    tr_sleep_ms(50); /* port briefly unavailable */
  }
  return -1;
}

/* Stops the server and removes its directory. */
static void tr_stop(test_redis *tr) {
  if (tr->pid > 0) {
    kill(tr->pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
      if (waitpid(tr->pid, NULL, WNOHANG) == tr->pid) {
        tr->pid = 0;
        break;
      }
      tr_sleep_ms(20);
    }
    tr_kill(tr);
  }
  if (tr->dir[0]) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tr->dir);
    if (system(cmd) != 0)
      fprintf(stderr, "cannot remove %s\n", tr->dir);
    tr->dir[0] = 0;
  }
}

#endif /* PERFC_TEST_REDIS_SERVER_H */
