#include "sum.h"

long long sum(int n, const long long *a) {
    long long total = 0;
    for (int i = 0; i < n; i++) total += a[i];
    return total;
}
