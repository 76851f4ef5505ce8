#include <stdio.h>
#include <stdlib.h>
int main(void) {
    int n;
    if (scanf("%d", &n) != 1) return 1;
    /* 512 MiB asked for, one byte of it touched: malloc returns NULL under RLIMIT_AS, and the
       program (which does not check, as many do not) crashes on it. */
    char *p = malloc((size_t)512 << 20);
    p[n] = (char)n;
    printf("%d\n", p[n]);
    return 0;
}
