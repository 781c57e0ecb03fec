/*
 * core/tag_internal.h — completion-queue tags, PERFC_CONTAINER_OF and the
 * ThreadSanitizer hand-off annotations: what every room that drives a
 * completion queue (the C core transport, the client) shares. Plain C, no
 * gRPC header, so including it drags nothing in.
 *
 * Room: runtime/src/core private header.
 */
#ifndef PERFC_CORE_TAG_INTERNAL_H
#define PERFC_CORE_TAG_INTERNAL_H

#include <stddef.h>

/* A completion-queue tag is a functor: the poller calls t->run(t, ok) with
 * no lookup. Structs that own tags embed them and recover themselves with
 * PERFC_CONTAINER_OF. */
typedef struct perfc_tag perfc_tag;
struct perfc_tag {
  void (*run)(perfc_tag *t, int ok);
};

/* libgrpc is not built with ThreadSanitizer, so TSan cannot see that the
 * completion queue orders "start batch on thread A" before "tag delivered on
 * thread B". These annotations state that edge at exactly those two points;
 * they compile to nothing in normal builds. */
#if defined(__SANITIZE_THREAD__)
#define PERFC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PERFC_TSAN 1
#endif
#endif
#ifdef PERFC_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
void AnnotateIgnoreWritesBegin(const char *file, int line);
void AnnotateIgnoreWritesEnd(const char *file, int line);
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define PERFC_HANDOFF_RELEASE(tag) __tsan_release(tag)
#define PERFC_HANDOFF_ACQUIRE(tag) __tsan_acquire(tag)
/* Around giving back memory the core allocated and filled (a call's request
 * metadata, details, payload). The core may fill it on any thread that
 * polled the connection (in the tests, a client thread of the same
 * process: epoll1 polls every fd from every poller) and hands it over
 * through its own locks, which TSan cannot see; the hand-off to perfc is
 * the request tag above. The free is then not a race, so TSan is told to
 * ignore it (and only it). */
#define PERFC_CORE_MEMORY_BEGIN() AnnotateIgnoreWritesBegin(__FILE__, __LINE__)
#define PERFC_CORE_MEMORY_END() AnnotateIgnoreWritesEnd(__FILE__, __LINE__)
/* Around reading a byte buffer the core made (a received message): the
 * core fills it on whichever thread polled the connection (a client's
 * pluck, or another poller, may process this call's read) and hands it
 * over through its own locks. Only reads are ignored; perfc's writes (the
 * arena copy) are still checked. */
#define PERFC_CORE_READS_BEGIN() AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define PERFC_CORE_READS_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define PERFC_HANDOFF_RELEASE(tag) ((void)(tag))
#define PERFC_HANDOFF_ACQUIRE(tag) ((void)(tag))
#define PERFC_CORE_MEMORY_BEGIN() ((void)0)
#define PERFC_CORE_MEMORY_END() ((void)0)
#define PERFC_CORE_READS_BEGIN() ((void)0)
#define PERFC_CORE_READS_END() ((void)0)
#endif

#define PERFC_CONTAINER_OF(ptr, type, member)                                  \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif
