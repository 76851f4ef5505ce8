/* cutor-spool's stage launcher: see launcher.py, which builds its argv and documents it. Compiled
   statically (by launcher.py at run time, or ahead of time by a packager: nix/launcher.nix). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail(const char *what, const char *arg, int err) {
    fprintf(stderr, "cutor-launch: %s %s: %s\n", what, arg, err ? strerror(err) : "invalid");
    return 125;
}

static int resource(const char *name) {
    static const struct { const char *name; int resource; } table[] = {
        {"cpu", RLIMIT_CPU}, {"fsize", RLIMIT_FSIZE}, {"nofile", RLIMIT_NOFILE},
        {"stack", RLIMIT_STACK}, {"core", RLIMIT_CORE}, {"nproc", RLIMIT_NPROC},
        {"as", RLIMIT_AS},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(name, table[i].name) == 0) return table[i].resource;
    return -1;
}

static int number(const char *text, rlim_t *out) {
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || end == text || (*end && *end != ':')) return -1;
    *out = (rlim_t)value;
    return 0;
}

/* Kills every process in a cgroup (its cgroup.procs file) but this one, a few rounds: what is
   forking as we read is caught by the next. */
static void kill_cgroup(const char *procs) {
    for (int round = 0; round < 3; round++) {
        int fd = open(procs, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return;
        static char buf[1 << 16];
        ssize_t len = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (len <= 0) return;
        buf[len] = 0;
        for (char *p = buf, *end; *p; p = end) {
            long pid = strtol(p, &end, 10);
            if (end == p) break;
            if (pid > 0 && pid != getpid()) kill((pid_t)pid, SIGKILL);
        }
    }
}

/* guard=yes: the job runs in a child, and this process stays as its guard. When the worker dies
   (the guard's parent-death signal, SIGTERM) it kills everything in the job's cgroup, which the
   job's own parent-death signal could not do: Nix's sandboxed builders are not its children. The
   guard exits as the job did, a signal N as 128+N (as a shell does). Returns in the child. */
static int guard(const char *procs, int *status) {
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    signal(SIGCHLD, SIG_DFL);
    sigprocmask(SIG_BLOCK, &set, &old);
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) return *status = fail("pdeathsig", procs, errno), 1;
    if (getppid() != parent) return *status = 143, 1; /* the worker died before the job started */
    pid_t child = fork();
    if (child < 0) return *status = fail("fork", procs, errno), 1;
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        return 0;
    }
    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        if (sig == SIGTERM) {
            kill_cgroup(procs);
            return *status = 143, 1;
        }
        int wstatus;
        if (sig == SIGCHLD && waitpid(child, &wstatus, WNOHANG) == child) {
            *status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
            return 1;
        }
    }
}

/* init=yes: the job runs in a child, and this process stays as its parent, and as the reaper of
   whatever the job leaves behind (it may be pid 1 of the sandbox's pid namespace, as tini was).
   When the job ends it writes the job's own raw wait status, "<token> <status>\n", to the report
   (`report=PATH`, opened before the job starts; the token is $CUTOR_REPORT, taken out of the
   environment first) and exits as the job did, a signal N as 128+N. Every signal is blocked, so
   that the job cannot stop its parent short of SIGKILL (to pid 1 of a namespace, not even that),
   and it is not dumpable, so that the job cannot read its token or reach its report by /proc.
   Returns in the child. */
static int init(int report, const char *token, int *status) {
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    signal(SIGCHLD, SIG_DFL);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return *status = fail("dumpable", "init", errno), 1;
    pid_t child = fork();
    if (child < 0) return *status = fail("fork", "init", errno), 1;
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        return 0;
    }
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        int wstatus;
        pid_t pid;
        while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
            if (pid != child) continue; /* an orphan of the job's, reaped */
            if (report >= 0) {
                char line[160];
                int len = snprintf(line, sizeof line, "%s %d\n", token, wstatus);
                if (len > 0 && len < (int)sizeof line && write(report, line, (size_t)len) != len) { /* lost */ }
            }
            *status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
            return 1;
        }
        if (pid < 0 && errno == ECHILD) return *status = fail("wait", "init", errno), 1;
        sigwaitinfo(&chld, NULL);
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "keep") == 0) {
        int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
        if (fd < 0) return fail("open", argv[2], errno);
        while (flock(fd, LOCK_SH) != 0)
            if (errno != EINTR) return fail("flock", argv[2], errno);
        return 0;  /* the worker is gone */
    }
    int i = 1, marker = 1, guarded = 0, parent = 0, report = -1;
    const char *first_cgroup = NULL;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) return fail("bad option", argv[i], 0);
        *eq = 0;
        const char *value = eq + 1;
        if (strcmp(argv[i], "cgroup") == 0) {
            char pid[32];
            int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
            int fd = open(value, O_WRONLY | O_CLOEXEC);
            if (fd < 0) return fail("open", value, errno);
            if (write(fd, pid, len) != len) return fail("join cgroup", value, errno);
            close(fd);
            if (!first_cgroup) first_cgroup = value;
            continue;
        }
        if (strcmp(argv[i], "user") == 0) {
            char *end;
            errno = 0;
            unsigned long uid = strtoul(value, &end, 10);
            if (errno || end == value || *end != ':') return fail("bad user", value, 0);
            const char *rest = end + 1;
            unsigned long gid = strtoul(rest, &end, 10);
            if (errno || end == rest || *end || uid == 0 || gid == 0) return fail("bad user", value, 0);
            if (setgroups(0, NULL) != 0) return fail("setgroups", value, errno);
            if (setresgid(gid, gid, gid) != 0) return fail("setresgid", value, errno);
            if (setresuid(uid, uid, uid) != 0) return fail("setresuid", value, errno);
            if (setresuid(0, 0, 0) == 0 || getuid() != uid || geteuid() != uid) return fail("drop root", value, 0);
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail("no_new_privs", value, errno);
            continue;
        }
        if (strcmp(argv[i], "oom") == 0) { /* raising one's own score needs no privilege */
            int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
            if (fd < 0) return fail("open", "/proc/self/oom_score_adj", errno);
            ssize_t len = (ssize_t)strlen(value);
            if (write(fd, value, (size_t)len) != len) return fail("oom_score_adj", value, errno);
            close(fd);
            continue;
        }
        if (strcmp(argv[i], "marker") == 0) {
            if (strcmp(value, "no") == 0) marker = 0;
            else if (strcmp(value, "stderr") == 0) marker = 2;
            else return fail("bad option", "marker", 0);
            continue;
        }
        if (strcmp(argv[i], "init") == 0) {
            if (strcmp(value, "yes") != 0) return fail("bad option", "init", 0);
            parent = 1;
            continue;
        }
        if (strcmp(argv[i], "report") == 0) { /* a FIFO the worker reads; never blocks the job's end */
            report = open(value, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
            if (report < 0) return fail("open", value, errno);
            continue;
        }
        if (strcmp(argv[i], "guard") == 0) {
            if (strcmp(value, "yes") != 0 || !first_cgroup) return fail("bad option", "guard (after a cgroup)", 0);
            guarded = 1;
            continue;
        }
        if (strcmp(argv[i], "stdin") == 0) {
            int fd = open(value, O_RDONLY | O_CLOEXEC);
            if (fd < 0) return fail("open", value, errno);
            if (dup2(fd, 0) < 0) return fail("dup2", value, errno);
            close(fd);
            continue;
        }
        int res = resource(argv[i]);
        struct rlimit limit;
        const char *colon = strchr(value, ':');
        if (res < 0 || number(value, &limit.rlim_cur) || number(colon ? colon + 1 : value, &limit.rlim_max))
            return fail("bad limit", argv[i], 0);
        if (setrlimit(res, &limit) != 0) return fail("setrlimit", argv[i], errno);
    }
    if (i + 1 >= argc) return fail("usage", "[LIMIT=N]... -- COMMAND", 0);
    int status;
    if (guarded && guard(first_cgroup, &status)) return status;
    if (parent) {
        char token[96] = "-";
        const char *given = getenv("CUTOR_REPORT");
        if (given && strlen(given) < sizeof token) strcpy(token, given);
        unsetenv("CUTOR_REPORT");
        if (init(report, token, &status)) return status;
    }
    /* The stage's started marker (stage.STARTED_MARKER): everything before this is ours, what
       follows is the job's, a missing command included. */
    if (marker && write(marker, "\036cutor-stage\036", 13) != 13) return fail("write", "marker", errno);
    execvp(argv[i + 1], &argv[i + 1]);
    int err = errno;
    fprintf(stderr, "%s: %s\n", argv[i + 1], strerror(err));
    return err == ENOENT ? 127 : 126;  /* a shell's codes: a missing command is the job's error */
}
