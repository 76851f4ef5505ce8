/* Calls system calls the stages' seccomp policy denies and prints "<name> <result> <errno>".
 * `probe all` calls every one; `probe NAME` calls just that one (for the kill action).
 * The arguments are invalid (a missing path, a pid that does not exist, bad flags), so that even
 * without a filter, and even as root, no call changes anything outside the probe itself. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 999999 /* a pid that does not exist: ESRCH without a filter */

static long call(const char *name) {
    if (!strcmp(name, "ptrace")) return syscall(SYS_ptrace, 12 /* GETREGS */, NOBODY, 0, 0);
    if (!strcmp(name, "process_vm_readv")) return syscall(SYS_process_vm_readv, NOBODY, 0, 0, 0, 0, 0);
    if (!strcmp(name, "mount")) return syscall(SYS_mount, "none", "/nonexistent/cutor", "tmpfs", 0, 0);
    if (!strcmp(name, "umount2")) return syscall(SYS_umount2, "/nonexistent", 0);
    if (!strcmp(name, "pivot_root")) return syscall(SYS_pivot_root, "/nonexistent", "/nonexistent");
    if (!strcmp(name, "unshare")) return syscall(SYS_unshare, CLONE_NEWUSER);
    if (!strcmp(name, "setns")) return syscall(SYS_setns, -1, 0);
    if (!strcmp(name, "clone")) {
        long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, 0, 0);
        return pid;
    }
    if (!strcmp(name, "clone3")) return syscall(SYS_clone3, 0, 0);
    if (!strcmp(name, "keyctl")) return syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0);
    if (!strcmp(name, "add_key")) return syscall(SYS_add_key, "user", "cutor", "x", 1, 0 /* no such keyring */);
    if (!strcmp(name, "request_key")) return syscall(SYS_request_key, "user", "cutor", 0, 0);
    if (!strcmp(name, "bpf")) return syscall(SYS_bpf, 0 /* MAP_CREATE */, 0, 0);
    if (!strcmp(name, "perf_event_open")) return syscall(SYS_perf_event_open, 0, 0, -1, -1, 0);
    if (!strcmp(name, "userfaultfd")) return syscall(SYS_userfaultfd, -1);
    if (!strcmp(name, "io_uring_setup")) return syscall(SYS_io_uring_setup, 0, 0);
    if (!strcmp(name, "io_uring_enter")) return syscall(SYS_io_uring_enter, -1, 0, 0, 0, 0, 0);
    if (!strcmp(name, "io_uring_register")) return syscall(SYS_io_uring_register, -1, 0, 0, 0);
    if (!strcmp(name, "personality")) return syscall(SYS_personality, 0x0040000 /* ADDR_NO_RANDOMIZE */);
    if (!strcmp(name, "kexec_load")) return syscall(SYS_kexec_load, 0, 0, 0, 0xffff0000UL /* no such architecture */);
    if (!strcmp(name, "kexec_file_load")) return syscall(SYS_kexec_file_load, -1, -1, 0, 0, 0);
    if (!strcmp(name, "init_module")) return syscall(SYS_init_module, 0, 0, "");
    if (!strcmp(name, "finit_module")) return syscall(SYS_finit_module, -1, "", 0);
    if (!strcmp(name, "delete_module")) return syscall(SYS_delete_module, "cutor_none", 0);
    if (!strcmp(name, "open_by_handle_at")) return syscall(SYS_open_by_handle_at, -1, 0, 0);
    if (!strcmp(name, "mbind")) return syscall(SYS_mbind, 0, 0, 0, 0, 0, 0);
    if (!strcmp(name, "syslog")) return syscall(SYS_syslog, 10 /* SIZE_BUFFER */, 0, 0);
    if (!strcmp(name, "reboot")) return syscall(SYS_reboot, 0, 0, 0, 0) /* wrong magic numbers */;
    errno = EINVAL;
    return -2;
}

static const char *const ALL[] = {
    "ptrace", "process_vm_readv", "mount", "umount2", "pivot_root", "unshare", "setns", "clone", "clone3",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "personality", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "open_by_handle_at", "mbind", "syslog", "reboot", 0,
};

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    for (const char *const *name = ALL; *name; name++) {
        if (strcmp(argv[1], "all") && strcmp(argv[1], *name)) continue;
        errno = 0;
        long result = call(*name);
        printf("%s %ld %d\n", *name, result, result < 0 ? errno : 0);
        fflush(stdout);
    }
    /* a query of the persona changes nothing and stays allowed */
    printf("personality-query %ld %d\n", (long)syscall(SYS_personality, 0xffffffffUL), errno);
    return 0;
}
