#include <stdio.h>

int main(int argc, char **argv) {
    char name[128] = "world";
    if (fgets(name, sizeof name, stdin)) {
        for (char *p = name; *p; p++)
            if (*p == '\n') *p = '\0';
    }
    printf("hello, %s!\n", name);
    for (int i = 1; i < argc; i++) printf("arg %d: %s\n", i, argv[i]);
    return 0;
}
