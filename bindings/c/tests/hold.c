/* Takes the mutex argv[2] of scope argv[1], prints "held TOKEN", and waits to be killed. */
#include <stdio.h>
#include <unistd.h>

#include "latchkey.h"

int main(int argc, char **argv) {
    latchkey_scope *scope = NULL;
    latchkey_lock *lock = NULL;
    latchkey_guard *guard = NULL;
    if (argc != 3 || latchkey_scope_open(argv[1], &scope) != 0 || latchkey_lock_open(scope, argv[2], 1, &lock) != 0 ||
        latchkey_acquire(lock, 1, LATCHKEY_WAIT_FOREVER, &guard) != 0) {
        fprintf(stderr, "hold: %s\n", latchkey_error_message());
        return 1;
    }
    printf("held %llu\n", (unsigned long long)latchkey_guard_fencing_token(guard));
    fflush(stdout);
    for (;;) {
        pause();
    }
}
