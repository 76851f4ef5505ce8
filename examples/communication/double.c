/* One copy of the program: reads its number on stdin, writes its double; argv[1] is its index. */
#include <stdio.h>

int main(int argc, char **argv) {
    long n;
    if (scanf("%ld", &n) != 1) return 1;
    fprintf(stderr, "copy %s got %ld\n", argc > 1 ? argv[1] : "?", n);
    printf("%ld\n", 2 * n);
    return 0;
}
