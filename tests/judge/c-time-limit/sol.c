#include <stdio.h>
int main(void) {
    long n;
    volatile unsigned long spin = 0;
    if (scanf("%ld", &n) != 1) return 1;
    if (n > 10) for (;;) spin++;
    printf("%ld\n", n);
    return 0;
}
