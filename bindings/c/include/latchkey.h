/*
 * latchkey.h: latchkey's named locks from C (and from every language with a C FFI).
 *
 * Link with -llatchkey (liblatchkey.so or liblatchkey.a, built by
 * `cargo build --release -p latchkey-c` into target/release/).
 *
 * Every primitive is permits out of a name's capacity: a mutex is 1 of 1, a read of a
 * reader-writer lock 1 of LATCHKEY_RWLOCK_CAPACITY and a write all of them, a semaphore of
 * n grants k of n. Grants are FIFO; a queued writer holds back later readers.
 *
 *     latchkey_scope *scope; latchkey_lock *lock; latchkey_guard *guard;
 *     if (latchkey_scope_open("host:", &scope) != 0) die(latchkey_error_message());
 *     latchkey_lock_open(scope, "db-migrations", 1, &lock);
 *     if (latchkey_acquire(lock, 1, 5000, &guard) == LATCHKEY_TIMEOUT) ...;
 *     write_with(latchkey_guard_fencing_token(guard));
 *     latchkey_release(guard);
 *     latchkey_lock_free(lock); latchkey_scope_free(scope);
 *
 * Functions that can fail return 0 or an error code (below) and leave the code and a
 * message (with the lock's name and scope) for this thread: latchkey_error_code(),
 * latchkey_error_message(). Calls block the calling thread; the library is thread-safe
 * (one scope may be used from many threads). No Rust panic crosses into C.
 */
#ifndef LATCHKEY_H
#define LATCHKEY_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The capacity of a reader-writer lock: a read takes 1 permit, a write all of them. */
#define LATCHKEY_RWLOCK_CAPACITY (1u << 30)
/* A timeout that waits for good. */
#define LATCHKEY_WAIT_FOREVER (-1)

/* Error codes, as latchkey's ErrorKind::code(). */
#define LATCHKEY_OK 0
#define LATCHKEY_GENERIC 8400
#define LATCHKEY_ACQUIRE_FAILED 8401
#define LATCHKEY_RELEASE_FAILED 8402
#define LATCHKEY_TIMEOUT 8403
#define LATCHKEY_NOT_HELD 8404
#define LATCHKEY_INVALID_NAME 8405
#define LATCHKEY_HANDLE_LOST 8406
#define LATCHKEY_UNAVAILABLE 8407
#define LATCHKEY_UNSUPPORTED 8408
#define LATCHKEY_PERMISSION_DENIED 8409
#define LATCHKEY_CAPACITY_MISMATCH 8410
#define LATCHKEY_CLOSED 8411
#define LATCHKEY_INVALID_SCOPE 8412
#define LATCHKEY_CORRUPTED 8413

typedef struct LatchkeyScope latchkey_scope;
typedef struct LatchkeyLock latchkey_lock;
typedef struct LatchkeyGuard latchkey_guard;

/* Opens the scope `url` names: "host:", "host:/dir", "process:", "etcd://...",
 * "postgres://...", "redis://...". */
int32_t latchkey_scope_open(const char *url, latchkey_scope **scope_out);
/* Frees a scope (NULL is ignored); its locks and guards stay usable (a scope over a
 * network ends its session once the last of them is gone). */
void latchkey_scope_free(latchkey_scope *scope);

/* Opens the name `name` of `scope` with `capacity` permits. */
int32_t latchkey_lock_open(const latchkey_scope *scope, const char *name, uint32_t capacity,
                           latchkey_lock **lock_out);
/* Frees a lock (NULL is ignored); its guards stay held. */
void latchkey_lock_free(latchkey_lock *lock);

/* Blocks until `permits` are granted, at most `timeout_ms` ms (negative: for good). */
int32_t latchkey_acquire(const latchkey_lock *lock, uint32_t permits, int64_t timeout_ms,
                         latchkey_guard **guard_out);
/* Takes `permits` if free and nobody waits; *guard_out is NULL (and 0 returned) if not. */
int32_t latchkey_try_acquire(const latchkey_lock *lock, uint32_t permits, latchkey_guard **guard_out);
/* Releases and frees the guard (freed even when the release fails). */
int32_t latchkey_release(latchkey_guard *guard);
/* Frees the guard, releasing without reporting how that went (NULL is ignored). */
void latchkey_guard_free(latchkey_guard *guard);
/* The grant's fencing token: greater than every earlier grant's of the name (0 for NULL). */
uint64_t latchkey_guard_fencing_token(const latchkey_guard *guard);
/* Whether the hold is known to be lost (true for NULL). */
bool latchkey_guard_is_lost(const latchkey_guard *guard);
/* If anybody waits, hands over and blocks until granted again at the back; else keeps the
 * grant. *guard becomes the new grant; on an error it is freed and set to NULL. */
int32_t latchkey_guard_cede(latchkey_guard **guard);
/* latchkey_guard_cede, granted again within `timeout_ms` ms (negative: for good; a scope
 * over a network takes at least 250 ms, its first round trip) or LATCHKEY_TIMEOUT, the
 * grant given up and *guard freed and set to NULL. */
int32_t latchkey_guard_cede_timeout(latchkey_guard **guard, int64_t timeout_ms);

/* Whether anybody holds `name` in `scope`. */
int32_t latchkey_is_locked(const latchkey_scope *scope, const char *name, bool *locked_out);

/* This thread's last error code (0 after a success) and message (valid until the thread's
 * next call into the library). */
int32_t latchkey_error_code(void);
const char *latchkey_error_message(void);
/* The library's version, e.g. "0.1.0". */
const char *latchkey_version(void);

#ifdef __cplusplus
}
#endif

#endif /* LATCHKEY_H */
