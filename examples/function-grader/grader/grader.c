/* The problem's grader: it owns main() and the input format; the submission only computes. */
#include <stdio.h>
#include <stdlib.h>

#include "grader/sum.h"

int main(void) {
    int n;
    if (scanf("%d", &n) != 1 || n < 0) return 3;
    long long *a = malloc(sizeof *a * (size_t)(n ? n : 1));
    if (a == NULL) return 3;
    for (int i = 0; i < n; i++)
        if (scanf("%lld", &a[i]) != 1) return 3;
    printf("%lld\n", sum(n, a));
    free(a);
    return 0;
}
