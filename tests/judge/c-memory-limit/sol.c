#include <stdio.h>
#include <stdlib.h>
int main(void) {
    long mib;
    if (scanf("%ld", &mib) != 1) return 1;
    volatile char *p = malloc(mib << 20); /* volatile: the compiler may not drop the writes */
    if (!p) return 3;
    for (long i = 0; i < (mib << 20); i += 4096) p[i] = 1; /* touch every page */
    puts("ok");
    return 0;
}
