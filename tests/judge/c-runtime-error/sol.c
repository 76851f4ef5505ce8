#include <stdio.h>
#include <stdlib.h>
int main(void) {
    int n;
    if (scanf("%d", &n) != 1) return 1;
    if (n == 1) { volatile int *p = NULL; return *p; }
    if (n == 2) return 42;
    printf("%d\n", n);
    fflush(stdout);
    if (n == 3) abort();
    return 0;
}
