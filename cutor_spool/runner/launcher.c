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
#include <poll.h>
#include <sched.h>
#include <net/if.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

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


/* ---- Warm slots (keeper.py): `root` builds a stage's mount tree once; `ns=FD` enters it. ---- */

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#define KEYCTL_JOIN_SESSION_KEYRING 1
#define KEYCTL_CLEAR 7
#define KEYCTL_GET_PERSISTENT 22
#define KEY_SPEC_SESSION_KEYRING -3
#define KEY_SPEC_USER_KEYRING -4
#define KEY_SPEC_USER_SESSION_KEYRING -5

static int mkdirs(const char *path, mode_t mode) {
    char buf[4096];
    if (strlen(path) >= sizeof buf) return errno = ENAMETOOLONG, -1;
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, mode) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, mode) != 0 && errno != EEXIST ? -1 : 0;
}

/* An empty file or directory at `dest` (under the new root) to mount `src` on. */
static int mount_point(const char *src, const char *dest) {
    struct stat st;
    if (stat(src, &st) != 0) return -1;
    if (S_ISDIR(st.st_mode)) return mkdirs(dest, 0755);
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", dest);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) { *slash = 0; if (mkdirs(parent, 0755) != 0) return -1; }
    int fd = open(dest, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return errno == EEXIST ? 0 : -1;
    close(fd);
    return 0;
}

static int ro_bind(const char *src, const char *dest, unsigned long extra) {
    if (mount_point(src, dest) != 0) return -1;
    if (mount(src, dest, NULL, MS_BIND | MS_REC, NULL) != 0) return -1;
    return mount(NULL, dest, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | extra, NULL);
}

/* root DIR [--ro-bind SRC DEST | --symlink TARGET LINK | --dir PATH]...: the read-only tree every
   stage of one environment shares, made once. In a new mount namespace: a tmpfs on DIR holding
   the given binds and links, a /dev of device nodes bound from the host's, empty mount points
   for what each stage mounts itself (/proc, /tmp, /dev/shm, /dev/pts, /work, /run/cutor); then
   pivot_root into it, the host's tree detached, everything read-only. Writes "ready\n" and waits
   for the end of its stdin: the worker opens /proc/PID/ns/mnt meanwhile and keeps that. */
static int make_root(int argc, char **argv) {
    const char *dir = argv[0];
    if (unshare(CLONE_NEWNS) != 0) return fail("unshare", "mount namespace", errno);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return fail("mount", "private", errno);
    if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") != 0) return fail("mount", dir, errno);
    if (chdir(dir) != 0) return fail("chdir", dir, errno);
    char dest[4096];
    for (int i = 1; i < argc; i++) {
        int more = argc - i - 1;
        if (strcmp(argv[i], "--ro-bind") == 0 && more >= 2) {
            snprintf(dest, sizeof dest, ".%s", argv[i + 2]);
            if (ro_bind(argv[i + 1], dest, 0) != 0) return fail("bind", argv[i + 1], errno);
            i += 2;
        } else if (strcmp(argv[i], "--symlink") == 0 && more >= 2) {
            snprintf(dest, sizeof dest, ".%s", argv[i + 2]);
            if (symlink(argv[i + 1], dest) != 0) return fail("symlink", argv[i + 2], errno);
            i += 2;
        } else if (strcmp(argv[i], "--dir") == 0 && more >= 1) {
            snprintf(dest, sizeof dest, ".%s", argv[i + 1]);
            if (mkdirs(dest, 0755) != 0) return fail("mkdir", argv[i + 1], errno);
            i += 1;
        } else return fail("bad option", argv[i], 0);
    }
    static const char *dirs[] = {"./proc", "./tmp", "./work", "./run/cutor", "./dev"};
    for (size_t k = 0; k < sizeof dirs / sizeof dirs[0]; k++)
        if (mkdirs(dirs[k], 0755) != 0) return fail("mkdir", dirs[k], errno);
    if (mount("tmpfs", "./dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") != 0) return fail("mount", "/dev", errno);
    static const char *nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (size_t k = 0; k < sizeof nodes / sizeof nodes[0]; k++) {
        char src[64];
        snprintf(src, sizeof src, "/dev/%s", nodes[k]);
        snprintf(dest, sizeof dest, "./dev/%s", nodes[k]);
        if (mount_point(src, dest) != 0 || mount(src, dest, NULL, MS_BIND, NULL) != 0) return fail("bind", src, errno);
    }
    static const char *links[][2] = {{"/proc/self/fd", "./dev/fd"}, {"/proc/self/fd/0", "./dev/stdin"},
        {"/proc/self/fd/1", "./dev/stdout"}, {"/proc/self/fd/2", "./dev/stderr"}, {"pts/ptmx", "./dev/ptmx"}};
    for (size_t k = 0; k < sizeof links / sizeof links[0]; k++)
        if (symlink(links[k][0], links[k][1]) != 0) return fail("symlink", links[k][1], errno);
    if (mkdirs("./dev/shm", 0755) != 0 || mkdirs("./dev/pts", 0755) != 0) return fail("mkdir", "/dev", errno);
    if (mount(NULL, "./dev", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL) != 0) return fail("remount", "/dev", errno);
    if (mkdirs("./.old", 0700) != 0) return fail("mkdir", ".old", errno);
    if (syscall(SYS_pivot_root, ".", "./.old") != 0) return fail("pivot_root", dir, errno);
    if (chdir("/") != 0 || umount2("/.old", MNT_DETACH) != 0) return fail("umount", "the host's tree", errno);
    if (rmdir("/.old") != 0) return fail("rmdir", ".old", errno);
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0) return fail("remount", "/", errno);
    if (write(1, "ready\n", 6) != 6) return fail("write", "ready", errno);
    char c;
    while (read(0, &c, 1) > 0 || errno == EINTR) {}
    return 0;
}

static int loopback_up(void) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq req;
    memset(&req, 0, sizeof req);
    strcpy(req.ifr_name, "lo");
    req.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
    if (sock < 0 || ioctl(sock, SIOCSIFFLAGS, &req) != 0) return -1;
    close(sock);
    return 0;
}

/* netns N: N new network namespaces, loopback up in each, sent as descriptors (SCM_RIGHTS) on
   stdout, a Unix socket: the worker keeps them ready, and a stage enters one (`netns=FD`)
   instead of making its own (copy_net_ns is a third of a warm stage's work in the kernel). Each
   is entered by one stage only. */
static int make_netns(const char *count) {
    int n = atoi(count), fds[64];
    if (n < 1 || n > 64) return fail("bad count", count, 0);
    for (int k = 0; k < n; k++) {
        if (unshare(CLONE_NEWNET) != 0) return fail("unshare", "net", errno);
        if (loopback_up() != 0) return fail("loopback", "up", errno);
        if ((fds[k] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)) < 0) return fail("open", "ns/net", errno);
    }
    char byte = 0, control[CMSG_SPACE(sizeof fds)];
    memset(control, 0, sizeof control);
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n)};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET, cmsg->cmsg_type = SCM_RIGHTS, cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)n);
    if (sendmsg(1, &msg, 0) != 1) return fail("sendmsg", "netns", errno);
    return 0;
}

struct warm {
    int ns, env, status, seccomp, net, netns, keyring;
    const char *work, *io, *tmp;
    unsigned long uid, gid;
};

static int drop_user(unsigned long uid, unsigned long gid, const char *what) {
    if (setgroups(0, NULL) != 0) return fail("setgroups", what, errno);
    if (setresgid(gid, gid, gid) != 0) return fail("setresgid", what, errno);
    if (setresuid(uid, uid, uid) != 0) return fail("setresuid", what, errno);
    if (setresuid(0, 0, 0) == 0 || getuid() != uid || geteuid() != uid) return fail("drop root", what, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail("no_new_privs", what, errno);
    return 0;
}

/* The stage's environment from bwrap's `--args` format: NUL-separated `--setenv NAME VALUE`. */
static int read_env(int fd) {
    static char buf[1 << 20];
    size_t len = 0;
    ssize_t got;
    while ((got = read(fd, buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)got;
    if (got < 0) return fail("read", "env", errno);
    buf[len] = 0;
    clearenv();
    for (char *p = buf; p < buf + len;) {
        char *name = p + strlen(p) + 1, *value = name + strlen(name) + 1;
        if (strcmp(p, "--setenv") != 0 || value >= buf + len) return fail("bad", "env", 0);
        if (setenv(name, value, 1) != 0) return fail("setenv", name, errno);
        p = value + strlen(value) + 1;
    }
    return 0;
}

static int load_seccomp(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size % sizeof(struct sock_filter)) return fail("seccomp", "filter", errno);
    static char prog[1 << 20];
    if (st.st_size > (off_t)sizeof prog || pread(fd, prog, (size_t)st.st_size, 0) != st.st_size) return fail("read", "filter", errno);
    struct sock_fprog fprog = {.len = (unsigned short)(st.st_size / sizeof(struct sock_filter)), .filter = (struct sock_filter *)prog};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) return fail("seccomp", "filter", errno);
    return 0;
}

static int mount_tmpfs(const char *where, const char *size, const struct warm *w) {
    char options[128];
    snprintf(options, sizeof options, "mode=0755,size=%s,uid=%lu,gid=%lu,nr_inodes=100000", size, w->uid, w->gid);
    return mount("tmpfs", where, "tmpfs", MS_NOSUID | MS_NODEV, options);
}

static int attach(int tree, const char *where) {
    return (int)syscall(SYS_move_mount, tree, "", AT_FDCWD, where, MOVE_MOUNT_F_EMPTY_PATH);
}

/* In pid 1 of the stage's new pid namespace, as root still: /proc of that namespace, a session
   of its own, loopback up. (bubblewrap binds /proc/sys, /proc/irq and /proc/bus read-only over
   themselves, for a job that has capabilities in its user namespace; this one has none anywhere,
   and those files are root's: it may write there only what any user of the host may.) */
static int inside(const struct warm *w, int alive) {
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) return fail("mount", "/proc", errno);
    if (setsid() < 0) return fail("setsid", "stage", errno);
    if (!w->net && w->netns < 0 && loopback_up() != 0) return fail("loopback", "up", errno);
    if (chdir("/work") != 0) return fail("chdir", "/work", errno);
    if (w->env >= 0 && read_env(w->env)) return 125;
    if (drop_user(w->uid, w->gid, "stage")) return 125;
    /* The uid change cleared the parent-death signal (prctl(2)): set it again, then see that the
       parent (this stage's monitor, which dies with the worker) did not go in between. */
    struct pollfd gone = {.fd = alive, .events = POLLIN};
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || poll(&gone, 1, 0) != 0) return 125;
    close(alive);
    /* keyring=yes (a filter that lets the job use keyrings): they are the uid's across the host (no
       user namespace here), so a new session keyring (not the worker's), and the user's,
       user-session and persistent keyrings emptied of what an earlier stage left. */
    if (w->keyring) {
        if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0) return fail("keyctl", "session", errno);
        syscall(SYS_keyctl, KEYCTL_CLEAR, KEY_SPEC_USER_KEYRING);
        syscall(SYS_keyctl, KEYCTL_CLEAR, KEY_SPEC_USER_SESSION_KEYRING);
        long persistent = syscall(SYS_keyctl, KEYCTL_GET_PERSISTENT, -1, KEY_SPEC_SESSION_KEYRING);
        if (persistent > 0) syscall(SYS_keyctl, KEYCTL_CLEAR, persistent);
        if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0) return fail("keyctl", "session", errno);
    }
    if (w->seccomp >= 0 && load_seccomp(w->seccomp)) return 125;
    return 0;
}

/* ns=FD (with work, io, tmp, net, env, status, seccomp, user): a stage on a warm slot. Runs as root
   on the host, in the stage's cgroups, with its rlimits. Clones the slot's current /work and io
   (detached mounts, taken before leaving the host's tree), enters the environment's mount tree
   (FD, made by `root`) and copies it (a new mount namespace) with new ipc, uts, pid, cgroup and,
   unless the stage has network, net namespaces; mounts a fresh /tmp, /dev/shm and /dev/pts and
   attaches /work and /run/cutor (read-only); then forks pid 1, which mounts /proc, drops to the
   slot's uid and loads the filter. This process stays as its parent (as bubblewrap's monitor),
   reports {"child-pid": N} on `status` and exits as pid 1 did. Returns 0 in pid 1, which goes on
   with the options after the first `--` (init=yes ...). */
static int enter(const struct warm *w, int *status) {
    if (!w->work || !w->io || !w->tmp || !w->uid || w->status < 0) return *status = fail("usage", "ns= needs work, io, tmp, status, user", 0), 1;
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) return *status = fail("pdeathsig", "stage", errno), 1;
    int work = (int)syscall(SYS_open_tree, AT_FDCWD, w->work, OPEN_TREE_CLONE | O_CLOEXEC | AT_SYMLINK_NOFOLLOW);
    if (work < 0) return *status = fail("open_tree", w->work, errno), 1;
    int io = (int)syscall(SYS_open_tree, AT_FDCWD, w->io, OPEN_TREE_CLONE | O_CLOEXEC | AT_SYMLINK_NOFOLLOW);
    if (io < 0) return *status = fail("open_tree", w->io, errno), 1;
    if (setns(w->ns, CLONE_NEWNS) != 0) return *status = fail("setns", "mount", errno), 1;
    if (!w->net && w->netns >= 0 && setns(w->netns, CLONE_NEWNET) != 0) return *status = fail("setns", "net", errno), 1;
    int fresh_net = w->net || w->netns >= 0 ? 0 : CLONE_NEWNET;
    int flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID | CLONE_NEWCGROUP | fresh_net;
    if (unshare(flags) != 0) return *status = fail("unshare", "stage", errno), 1;
    if (mount_tmpfs("/tmp", w->tmp, w) != 0 || mount_tmpfs("/dev/shm", w->tmp, w) != 0) return *status = fail("mount", "tmpfs", errno), 1;
    if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620") != 0)
        return *status = fail("mount", "/dev/pts", errno), 1;
    if (attach(work, "/work") != 0) return *status = fail("move_mount", "/work", errno), 1;
    if (attach(io, "/run/cutor") != 0 ||
        mount(NULL, "/run/cutor", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
        return *status = fail("mount", "/run/cutor", errno), 1;
    /* A clone of a shared mount (a systemd host's) joins its peer group: not the stage's. */
    if (mount(NULL, "/work", NULL, MS_PRIVATE, NULL) != 0 || mount(NULL, "/run/cutor", NULL, MS_PRIVATE, NULL) != 0)
        return *status = fail("mount", "private", errno), 1;
    close(work);
    close(io);
    if (sethostname("sandbox", 7) != 0) return *status = fail("sethostname", "sandbox", errno), 1;
    int alive[2];
    if (pipe2(alive, O_CLOEXEC) != 0) return *status = fail("pipe", "stage", errno), 1;
    pid_t child = fork();
    if (child < 0) return *status = fail("fork", "stage", errno), 1;
    if (child == 0) {
        close(alive[1]);
        close(w->status); /* the worker sees its end once the parent has written the child's pid */
        struct pollfd gone = {.fd = alive[0], .events = POLLIN};
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || poll(&gone, 1, 0) != 0) return *status = 125, 1;
        if ((*status = inside(w, alive[0])) != 0) return 1;
        close(w->ns), close(w->env), close(w->seccomp), close(w->netns);
        return 0;
    }
    close(alive[0]);
    char line[64];
    int len = snprintf(line, sizeof line, "{\"child-pid\": %d}\n", (int)child);
    if (write(w->status, line, (size_t)len) != len) { /* the worker reads it; it judges a stage without it as failed */ }
    close(w->status);
    int wstatus;
    while (waitpid(child, &wstatus, 0) < 0)
        if (errno != EINTR) return *status = fail("wait", "stage", errno), 1;
    *status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    return 1;
}

/* The stage's pid 1 is this process, not a new exec: its command line, which the job can read in
   /proc/1/cmdline, would show the host's options (cgroup and slot paths). It is rewritten in place
   to what bubblewrap's pid 1 shows: MOUNT_POINT and the options after `--` (argv[from]). */
static void hide_host_options(int argc, char **argv, int from) {
    char *start = argv[0], *end = argv[argc - 1] + strlen(argv[argc - 1]) + 1;
    static const char name[] = "/run/cutor-launch";
    size_t need = sizeof name;
    for (int k = from + 1; k < argc; k++) need += strlen(argv[k]) + 1;
    char *copy = malloc(need), *at = copy;
    if (!copy || need > (size_t)(end - start)) return;
    memcpy(at, name, sizeof name), at += sizeof name;
    for (int k = from + 1; k < argc; k++) at = stpcpy(at, argv[k]) + 1;
    memset(start, 0, (size_t)(end - start));
    memcpy(start, copy, need);
    argv[from] = start;
    at = start + sizeof name;
    for (int k = from + 1; k < argc; k++) argv[k] = at, at += strlen(at) + 1;
    free(copy);
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "root") == 0) return make_root(argc - 2, argv + 2);
    if (argc == 3 && strcmp(argv[1], "netns") == 0) return make_netns(argv[2]);
    if (argc == 3 && strcmp(argv[1], "keep") == 0) {
        int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
        if (fd < 0) return fail("open", argv[2], errno);
        while (flock(fd, LOCK_SH) != 0)
            if (errno != EINTR) return fail("flock", argv[2], errno);
        return 0;  /* the worker is gone */
    }
    int i = 1, marker = 1, guarded = 0, parent = 0, report = -1;
    const char *first_cgroup = NULL;
    struct warm w = {.ns = -1, .env = -1, .status = -1, .seccomp = -1, .netns = -1};
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) return fail("bad option", argv[i], 0);
        *eq = 0;
        const char *value = eq + 1;
        int *fd_option = strcmp(argv[i], "ns") == 0 ? &w.ns : strcmp(argv[i], "env") == 0 ? &w.env
            : strcmp(argv[i], "netns") == 0 ? &w.netns
            : strcmp(argv[i], "status") == 0 ? &w.status : strcmp(argv[i], "seccomp") == 0 ? &w.seccomp : NULL;
        if (fd_option) {
            char *end;
            long fd = strtol(value, &end, 10);
            if (end == value || *end || fd < 3) return fail("bad descriptor", argv[i], 0);
            *fd_option = (int)fd;
            continue;
        }
        if (strcmp(argv[i], "work") == 0) { w.work = value; continue; }
        if (strcmp(argv[i], "io") == 0) { w.io = value; continue; }
        if (strcmp(argv[i], "tmp") == 0) { w.tmp = value; continue; }
        if (strcmp(argv[i], "net") == 0) { w.net = strcmp(value, "yes") == 0; continue; }
        if (strcmp(argv[i], "keyring") == 0) { w.keyring = strcmp(value, "yes") == 0; continue; }
        if (strcmp(argv[i], "user") == 0 && w.ns >= 0) { /* dropped in the stage's pid 1, after its mounts */
            char *end;
            errno = 0;
            w.uid = strtoul(value, &end, 10);
            if (errno || end == value || *end != ':') return fail("bad user", value, 0);
            w.gid = strtoul(end + 1, &end, 10);
            if (errno || *end || w.uid == 0 || w.gid == 0) return fail("bad user", value, 0);
            continue;
        }
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
    if (w.ns >= 0) { /* a stage on a warm slot; its pid 1 goes on with the options after `--` */
        if (enter(&w, &status)) return status;
        hide_host_options(argc, argv, i);
        return main(argc - i, argv + i);
    }
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
