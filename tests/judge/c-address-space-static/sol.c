#include <stdio.h>
/* 128 MiB the program never touches: the cgroup charges none of it, RLIMIT_AS all of it. */
char untouched[128 << 20];
int main(void) {
    int n;
    if (scanf("%d", &n) != 1) return 1;
    printf("%d\n", n + (untouched[n & 1] != 0));
    return 0;
}
