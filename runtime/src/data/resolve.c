/*
 * data/resolve.c — host names resolved by one thread, read by the loops
 * without blocking (data/resolve_internal.h says why).
 *
 * Room: runtime/src/data. Touches only its own table and thread; the
 * clients that connect from a loop (redis_async.c, pg_async.c) call it.
 *
 * The table holds one entry per name asked, for as long as a reference is
 * held (the configured hosts: a handful). The thread takes queued entries
 * one at a time, looks them up with the mutex released, and writes the
 * answer back. An entry is never freed while the thread runs, so the
 * thread reads its name unlocked.
 */
#include "data/resolve_internal.h"

#include "perfc/common.h"
#include "perfc/log.h"
#include "perfc/loop.h"
#include "core/thread_internal.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* A good answer is looked up again (in the background) this old. */
#define RESOLVE_REFRESH_MS 30000
/* A failed lookup is asked again at most this often. */
#define RESOLVE_RETRY_MS 1000

typedef struct rentry {
  struct rentry *next;  /* the table */
  struct rentry *qnext; /* the thread's queue */
  int status; /* 0: addr holds an answer; PERFC_EUNAVAILABLE: none yet;
                 PERFC_ENOENT: the last lookup failed, none before */
  int queued;
  int64_t at_ms; /* the last lookup's end */
  char addr[PERFC__RESOLVE_ADDR_LEN];
  char name[];
} rentry;

/* life_mu orders ref/unref (the thread's start and join); mu guards the
 * rest. */
static pthread_mutex_t life_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t answer_cv; /* CLOCK_MONOTONIC, made once */
static pthread_once_t answer_once = PTHREAD_ONCE_INIT;
static unsigned refs;
static int stopping;
static pthread_t thread;
static rentry *table, *qhead, *qtail;
static perfc__resolve_lookup_fn lookup_fn;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void answer_cv_init(void) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&answer_cv, &a);
  pthread_condattr_destroy(&a);
}

/* getaddrinfo(), IPv4 first as hiredis does (a "localhost" whose ::1 comes
 * first must still reach a server bound to 127.0.0.1), then any family. */
static int sys_lookup(const char *name, char addr[PERFC__RESOLVE_ADDR_LEN]) {
  static const int families[] = {AF_INET, AF_UNSPEC};
  for (int i = 0; i < 2; i++) {
    struct addrinfo hints = {.ai_family = families[i],
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(name, NULL, &hints, &res) != 0 || res == NULL)
      continue;
    const void *a =
        res->ai_family == AF_INET
            ? (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr
            : (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr;
    const char *ok =
        inet_ntop(res->ai_family, a, addr, PERFC__RESOLVE_ADDR_LEN);
    freeaddrinfo(res);
    if (ok != NULL)
      return 0;
  }
  return -1;
}

static void enqueue(rentry *e) {
  e->queued = 1;
  e->qnext = NULL;
  if (qtail != NULL)
    qtail->qnext = e;
  else
    qhead = e;
  qtail = e;
  pthread_cond_signal(&work_cv);
}

static void *resolver_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&mu);
  for (;;) {
    while (!stopping && qhead == NULL)
      pthread_cond_wait(&work_cv, &mu);
    if (stopping)
      break;
    rentry *e = qhead;
    qhead = e->qnext;
    if (qhead == NULL)
      qtail = NULL;
    perfc__resolve_lookup_fn fn = lookup_fn;
    pthread_mutex_unlock(&mu);
    char addr[PERFC__RESOLVE_ADDR_LEN];
    int rc = fn != NULL ? fn(e->name, addr) : sys_lookup(e->name, addr);
    pthread_mutex_lock(&mu);
    e->queued = 0;
    e->at_ms = now_ms();
    if (rc == 0) {
      if (e->status != 0 || strcmp(e->addr, addr) != 0)
        perfc_log(PERFC_LOG_INFO, "resolve: %s is %s", e->name, addr);
      memcpy(e->addr, addr, sizeof addr);
      e->status = 0;
    } else if (e->status != 0) {
      if (e->status == PERFC_EUNAVAILABLE)
        perfc_log(PERFC_LOG_WARN, "resolve: %s does not resolve", e->name);
      e->status = PERFC_ENOENT;
    } else {
      /* A good answer stays (stale beats none); asked again sooner. */
      e->at_ms -= RESOLVE_REFRESH_MS - RESOLVE_RETRY_MS;
    }
    pthread_cond_broadcast(&answer_cv);
  }
  pthread_mutex_unlock(&mu);
  return NULL;
}

int perfc__resolve_ref(void) {
  pthread_once(&answer_once, answer_cv_init);
  pthread_mutex_lock(&life_mu);
  if (refs == 0) {
    stopping = 0;
    if (perfc__thread_create(&thread, resolver_main, NULL) != 0) {
      pthread_mutex_unlock(&life_mu);
      return PERFC_ETHREAD;
    }
  }
  refs++;
  pthread_mutex_unlock(&life_mu);
  return 0;
}

void perfc__resolve_unref(void) {
  pthread_mutex_lock(&life_mu);
  if (refs == 0 || --refs > 0) {
    pthread_mutex_unlock(&life_mu);
    return;
  }
  pthread_mutex_lock(&mu);
  stopping = 1;
  pthread_cond_broadcast(&work_cv);
  pthread_mutex_unlock(&mu);
  /* A lookup in progress ends first (at most the system's DNS timeout). */
  pthread_join(thread, NULL);
  pthread_mutex_lock(&mu);
  for (rentry *e = table, *next; e != NULL; e = next) {
    next = e->next;
    free(e);
  }
  table = qhead = qtail = NULL;
  pthread_mutex_unlock(&mu);
  pthread_mutex_unlock(&life_mu);
}

int perfc__resolve_is_name(const char *host) {
  unsigned char buf[sizeof(struct in6_addr)];
  if (host == NULL || host[0] == '\0' || host[0] == '/' || host[0] == '@')
    return 0;
  return inet_pton(AF_INET, host, buf) != 1 &&
         inet_pton(AF_INET6, host, buf) != 1;
}

/* The entry of `host`, made and queued when new; NULL out of memory. */
static rentry *entry_of(const char *host) {
  for (rentry *e = table; e != NULL; e = e->next)
    if (strcmp(e->name, host) == 0)
      return e;
  size_t n = strlen(host) + 1;
  rentry *e = calloc(1, sizeof *e + n);
  if (e == NULL)
    return NULL;
  memcpy(e->name, host, n);
  e->status = PERFC_EUNAVAILABLE;
  e->next = table;
  table = e;
  enqueue(e);
  return e;
}

/* Under mu: the answer, and a lookup queued when one is due. */
static int answer_of(rentry *e, char addr[PERFC__RESOLVE_ADDR_LEN]) {
  int64_t age = now_ms() - e->at_ms;
  if (e->status == 0) {
    memcpy(addr, e->addr, PERFC__RESOLVE_ADDR_LEN);
    if (!e->queued && age >= RESOLVE_REFRESH_MS)
      enqueue(e);
  } else if (e->status == PERFC_ENOENT && !e->queued &&
             age >= RESOLVE_RETRY_MS) {
    enqueue(e);
  }
  return e->status;
}

static int literal(const char *host, char addr[PERFC__RESOLVE_ADDR_LEN]) {
  size_t n = host != NULL ? strlen(host) : 0;
  if (n >= PERFC__RESOLVE_ADDR_LEN)
    return PERFC_EINVAL;
  memcpy(addr, host != NULL ? host : "", n + 1);
  return 0;
}

int perfc__resolve_peek(const char *host, char addr[PERFC__RESOLVE_ADDR_LEN]) {
  if (!perfc__resolve_is_name(host))
    return literal(host, addr);
  pthread_mutex_lock(&mu);
  rentry *e = entry_of(host);
  int rc = e != NULL ? answer_of(e, addr) : PERFC_ENOMEM;
  pthread_mutex_unlock(&mu);
  return rc;
}

int perfc__resolve_wait(const char *host, char addr[PERFC__RESOLVE_ADDR_LEN],
                        int64_t wait_ms) {
  if (!perfc__resolve_is_name(host))
    return literal(host, addr);
  /* A loop never waits (a cluster node's client may be made on one). */
  if (perfc_loop_current() != NULL)
    wait_ms = 0;
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += wait_ms / 1000;
  until.tv_nsec += (wait_ms % 1000) * 1000000;
  if (until.tv_nsec >= 1000000000) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&mu);
  rentry *e = entry_of(host);
  int rc = e != NULL ? answer_of(e, addr) : PERFC_ENOMEM;
  while (rc == PERFC_EUNAVAILABLE && wait_ms > 0 &&
         pthread_cond_timedwait(&answer_cv, &mu, &until) == 0)
    rc = answer_of(e, addr);
  if (rc == PERFC_EUNAVAILABLE)
    rc = answer_of(e, addr); /* the answer may have come with the timeout */
  pthread_mutex_unlock(&mu);
  return rc;
}

void perfc__resolve_set_lookup(perfc__resolve_lookup_fn fn) {
  pthread_mutex_lock(&mu);
  lookup_fn = fn;
  pthread_mutex_unlock(&mu);
}
