/* Every function of latchkey.h, on the scope given as argv[1] (a fresh host namespace):
 * exits 0 when every check holds, else prints the failed check and exits 1. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "latchkey.h"

static int failures = 0;

/* A scope of `url`, opened once more (the test's own was freed on the way). */
static latchkey_scope *scope_again(const char *url) {
    static latchkey_scope *again = NULL;
    if (again == NULL && latchkey_scope_open(url, &again) != LATCHKEY_OK) {
        fprintf(stderr, "cannot open %s: %s\n", url, latchkey_error_message());
        exit(1);
    }
    return again;
}

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: check failed: %s (last error %d: %s)\n",        \
                    __FILE__, __LINE__, #cond, latchkey_error_code(),                \
                    latchkey_error_message());                                      \
            failures++;                                                             \
        }                                                                           \
    } while (0)

/* A waiter for the interval lock: granted after the main thread cedes, it releases at once. */
static uint64_t waiter_token = 0;

static void *wait_for(void *lock) {
    latchkey_guard *guard = NULL;
    if (latchkey_acquire((const latchkey_lock *)lock, 1, 30000, &guard) == LATCHKEY_OK) {
        waiter_token = latchkey_guard_fencing_token(guard);
        latchkey_release(guard);
    }
    return NULL;
}

/* A holder that is granted after the main thread cedes, and keeps the lock until told. */
static atomic_bool keeper_may_go = false;
static bool keeper_was_granted = false;

static void *keep_until_told(void *lock) {
    latchkey_guard *guard = NULL;
    if (latchkey_acquire((const latchkey_lock *)lock, 1, 30000, &guard) == LATCHKEY_OK) {
        keeper_was_granted = true;
        while (!atomic_load(&keeper_may_go)) {
            struct timespec millisecond = {0, 1000000};
            nanosleep(&millisecond, NULL);
        }
        latchkey_release(guard);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: smoke SCOPE_URL\n");
        return 2;
    }
    CHECK(strlen(latchkey_version()) > 0);

    /* Bad input: a clear code and a message naming what was wrong. */
    latchkey_scope *bad = NULL;
    CHECK(latchkey_scope_open("nosuch://x", &bad) == LATCHKEY_INVALID_SCOPE);
    CHECK(latchkey_error_code() == LATCHKEY_INVALID_SCOPE);
    CHECK(strstr(latchkey_error_message(), "nosuch") != NULL);
    CHECK(latchkey_scope_open(NULL, &bad) == LATCHKEY_GENERIC);

    latchkey_scope *scope = NULL;
    CHECK(latchkey_scope_open(argv[1], &scope) == LATCHKEY_OK);
    CHECK(latchkey_error_code() == 0 && strcmp(latchkey_error_message(), "") == 0);
    latchkey_lock *invalid = NULL;
    CHECK(latchkey_lock_open(scope, "", 1, &invalid) == LATCHKEY_INVALID_NAME);

    /* A mutex: try, a timeout while held, release, a greater token. */
    latchkey_lock *mutex = NULL;
    CHECK(latchkey_lock_open(scope, "c-mutex", 1, &mutex) == LATCHKEY_OK);
    latchkey_guard *held = NULL, *other = NULL;
    CHECK(latchkey_try_acquire(mutex, 1, &held) == LATCHKEY_OK && held != NULL);
    uint64_t first = latchkey_guard_fencing_token(held);
    CHECK(first > 0);
    CHECK(!latchkey_guard_is_lost(held));
    bool locked = false;
    CHECK(latchkey_is_locked(scope, "c-mutex", &locked) == LATCHKEY_OK && locked);
    CHECK(latchkey_try_acquire(mutex, 1, &other) == LATCHKEY_OK && other == NULL);
    CHECK(latchkey_acquire(mutex, 1, 20, &other) == LATCHKEY_TIMEOUT && other == NULL);
    CHECK(strstr(latchkey_error_message(), "c-mutex") != NULL);
    CHECK(latchkey_release(held) == LATCHKEY_OK);
    CHECK(latchkey_is_locked(scope, "c-mutex", &locked) == LATCHKEY_OK && !locked);
    CHECK(latchkey_acquire(mutex, 1, LATCHKEY_WAIT_FOREVER, &held) == LATCHKEY_OK);
    CHECK(latchkey_guard_fencing_token(held) > first);
    /* A cede with nobody waiting keeps the lock. */
    CHECK(latchkey_guard_cede(&held) == LATCHKEY_OK && held != NULL);
    latchkey_guard_free(held); /* releases */
    CHECK(latchkey_is_locked(scope, "c-mutex", &locked) == LATCHKEY_OK && !locked);

    /* A cede with a waiter hands over, then is granted again behind it. */
    latchkey_lock *slice = NULL;
    CHECK(latchkey_lock_open(scope, "c-slice", 1, &slice) == LATCHKEY_OK);
    latchkey_guard *turn = NULL;
    CHECK(latchkey_acquire(slice, 1, 1000, &turn) == LATCHKEY_OK);
    uint64_t before = latchkey_guard_fencing_token(turn);
    pthread_t waiter;
    CHECK(pthread_create(&waiter, NULL, wait_for, slice) == 0);
    /* Nobody waits yet: a cede keeps the grant (same token); once the waiter is queued it
     * hands over, and comes back after the waiter's release with a greater token. */
    uint64_t token = before;
    for (int i = 0; i < 30000 && token == before; i++) {
        CHECK(latchkey_guard_cede(&turn) == LATCHKEY_OK && turn != NULL);
        token = latchkey_guard_fencing_token(turn);
        if (token == before) {
            struct timespec millisecond = {0, 1000000};
            nanosleep(&millisecond, NULL);
        }
    }
    CHECK(pthread_join(waiter, NULL) == 0);
    CHECK(waiter_token > before);
    CHECK(latchkey_guard_fencing_token(turn) > waiter_token);
    CHECK(latchkey_release(turn) == LATCHKEY_OK);
    latchkey_lock_free(slice);

    /* A cede not granted again in time fails with LATCHKEY_TIMEOUT and gives the lock up:
     * the keeper, granted by the cede, holds until the cede has returned. */
    latchkey_lock *handed = NULL;
    CHECK(latchkey_lock_open(scope, "c-cede-timeout", 1, &handed) == LATCHKEY_OK);
    latchkey_guard *mine = NULL;
    CHECK(latchkey_acquire(handed, 1, 1000, &mine) == LATCHKEY_OK);
    pthread_t keeper;
    CHECK(pthread_create(&keeper, NULL, keep_until_told, handed) == 0);
    int ceded = LATCHKEY_OK;
    for (int i = 0; i < 30000 && ceded == LATCHKEY_OK; i++) {
        ceded = latchkey_guard_cede_timeout(&mine, 100); /* keeps it while nobody waits */
        if (ceded == LATCHKEY_OK) {
            struct timespec millisecond = {0, 1000000};
            nanosleep(&millisecond, NULL);
        }
    }
    CHECK(ceded == LATCHKEY_TIMEOUT && mine == NULL);
    CHECK(strstr(latchkey_error_message(), "c-cede-timeout") != NULL);
    atomic_store(&keeper_may_go, true);
    CHECK(pthread_join(keeper, NULL) == 0 && keeper_was_granted);
    CHECK(latchkey_is_locked(scope, "c-cede-timeout", &locked) == LATCHKEY_OK && !locked);
    latchkey_lock_free(handed);

    /* A reader-writer lock: readers share, a writer waits for them. */
    latchkey_lock *rw = NULL;
    CHECK(latchkey_lock_open(scope, "c-rw", LATCHKEY_RWLOCK_CAPACITY, &rw) == LATCHKEY_OK);
    latchkey_guard *r1 = NULL, *r2 = NULL, *w = NULL;
    CHECK(latchkey_acquire(rw, 1, 1000, &r1) == LATCHKEY_OK);
    CHECK(latchkey_try_acquire(rw, 1, &r2) == LATCHKEY_OK && r2 != NULL);
    CHECK(latchkey_try_acquire(rw, LATCHKEY_RWLOCK_CAPACITY, &w) == LATCHKEY_OK && w == NULL);
    CHECK(latchkey_release(r1) == LATCHKEY_OK && latchkey_release(r2) == LATCHKEY_OK);
    CHECK(latchkey_try_acquire(rw, LATCHKEY_RWLOCK_CAPACITY, &w) == LATCHKEY_OK && w != NULL);
    CHECK(latchkey_release(w) == LATCHKEY_OK);

    /* A semaphore of 3: 2 + 1 fit, one more does not; a capacity mismatch is refused. */
    latchkey_lock *sem = NULL, *wrong = NULL;
    CHECK(latchkey_lock_open(scope, "c-sem", 3, &sem) == LATCHKEY_OK);
    latchkey_guard *two = NULL, *one = NULL, *more = NULL;
    CHECK(latchkey_acquire(sem, 2, 1000, &two) == LATCHKEY_OK);
    CHECK(latchkey_try_acquire(sem, 1, &one) == LATCHKEY_OK && one != NULL);
    CHECK(latchkey_try_acquire(sem, 1, &more) == LATCHKEY_OK && more == NULL);
    CHECK(latchkey_lock_open(scope, "c-sem", 5, &wrong) == LATCHKEY_CAPACITY_MISMATCH);
    CHECK(latchkey_acquire(sem, 4, 0, &more) == LATCHKEY_CAPACITY_MISMATCH);

    /* Guards outlive their lock and scope handles. */
    latchkey_lock_free(sem);
    latchkey_scope_free(scope);
    CHECK(latchkey_release(two) == LATCHKEY_OK && latchkey_release(one) == LATCHKEY_OK);

    /* A NULL out-pointer is refused before anything is taken (review finding). */
    latchkey_lock *nulled = NULL;
    CHECK(latchkey_lock_open(scope_again(argv[1]), "c-null", 1, &nulled) == LATCHKEY_OK);
    CHECK(latchkey_acquire(nulled, 1, 1000, NULL) == LATCHKEY_GENERIC);
    CHECK(latchkey_try_acquire(nulled, 1, NULL) == LATCHKEY_GENERIC);
    latchkey_guard *free_now = NULL;
    CHECK(latchkey_try_acquire(nulled, 1, &free_now) == LATCHKEY_OK && free_now != NULL);
    CHECK(latchkey_release(free_now) == LATCHKEY_OK);
    latchkey_lock_free(nulled);
    CHECK(latchkey_scope_open(argv[1], NULL) == LATCHKEY_GENERIC);
    CHECK(latchkey_scope_open("\xff\xfe", &bad) == LATCHKEY_INVALID_SCOPE);

    /* NULLs are errors, not crashes. */
    CHECK(latchkey_release(NULL) == LATCHKEY_GENERIC);
    CHECK(latchkey_guard_fencing_token(NULL) == 0 && latchkey_guard_is_lost(NULL));
    latchkey_guard_free(NULL);
    latchkey_lock_free(NULL);
    latchkey_scope_free(NULL);
    latchkey_lock_free(mutex);
    latchkey_lock_free(rw);

    if (failures == 0) {
        printf("ok\n");
    }
    return failures == 0 ? 0 : 1;
}
