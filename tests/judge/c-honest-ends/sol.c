#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    int n;
    if (scanf("%d", &n) != 1) return 1;
    printf("%d\n", n);
    fflush(stdout);
    if (n == 1) return 152;                        /* 128 + SIGXCPU, but an exit code */
    if (n == 2) exit(139);                         /* 128 + SIGSEGV, but an exit code */
    if (n == 3) raise(SIGXCPU);                    /* after a few ms of CPU: no time limit */
    if (n == 4) kill(getppid(), SIGXCPU), exit(3); /* nor is a SIGXCPU sent to its parent */
    if (n == 5) { volatile int *p = NULL; return *p; }
    if (n == 6) for (volatile unsigned long i = 0;; i++) {}
    return 0;
}
