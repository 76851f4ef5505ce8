/* argv: input expected output. Exit 0 right, 1 wrong, 7 partial with the fraction on stdout. */
#include <stdio.h>
int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: checker input expected output\n"); return 3; }
    FILE *in = fopen(argv[1], "r"), *out = fopen(argv[3], "r");
    long n, a, b;
    if (!in || fscanf(in, "%ld", &n) != 1) { fprintf(stderr, "bad input\n"); return 3; }
    if (!out || fscanf(out, "%ld %ld", &a, &b) != 2) { fprintf(stderr, "expected two integers\n"); return 1; }
    if (a + b != n) { fprintf(stderr, "%ld + %ld is not %ld\n", a, b, n); return 1; }
    if (a <= 0 || b <= 0) { printf("0.5\n"); fprintf(stderr, "the terms must be positive\n"); return 7; }
    fprintf(stderr, "ok\n");
    return 0;
}
