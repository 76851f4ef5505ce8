#include <stdio.h>
int main(void) {
    int n;
    if (scanf("%d", &n) != 1) return 1;
    if (n == 0) for (;;) puts("0000000000000000000000000000000");
    printf("%d\n", n);
    return 0;
}
