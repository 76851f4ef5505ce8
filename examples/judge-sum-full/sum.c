#include <stdio.h>

int main(void) {
    long n;
    long long total = 0, value;
    if (scanf("%ld", &n) != 1) return 1;
    for (long i = 0; i < n; i++) {
        if (scanf("%lld", &value) != 1) return 1;
        total += value;
    }
    printf("%lld\n", total);
    return 0;
}
