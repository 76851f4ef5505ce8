/* A self-checking program: prints what it computed, and exits non-zero if it is wrong. */
#include <stdio.h>

static unsigned long fib(unsigned n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int main(void) {
    unsigned long got = fib(30);
    printf("fib(30) = %lu\n", got);
    if (got != 832040UL) {
        fprintf(stderr, "expected 832040\n");
        return 1;
    }
    return 0;
}
