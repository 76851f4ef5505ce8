/* A correct solution to the guessing game: binary search, one query per halving. */
#include <stdio.h>

int main(void) {
    long n, lo = 1, hi;
    char reply[4];
    if (scanf("%ld", &n) != 1) return 1;
    hi = n;
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        printf("? %ld\n", mid);
        fflush(stdout);
        if (scanf("%3s", reply) != 1) return 1;
        if (reply[0] == '=') { lo = hi = mid; break; }
        if (reply[0] == '<') hi = mid - 1; else lo = mid + 1;
    }
    printf("! %ld\n", lo);
    fflush(stdout);
    return 0;
}
