from probe import *  # attempt(), os, socket, sys

for path in ["/usr/evil", "/etc/evil", "/evil", "/bin/evil", "/run/cutor/evil", "/proc/sys/kernel/evil",
             "/dev/evil", "/init"]:
    def probe(path=path):
        with open(path, "wb") as fh:
            fh.write(b"x")
    attempt(path, probe)
def mount():
    if os.system("mount -t tmpfs none /mnt 2>/dev/null") != 0:
        raise PermissionError("mount failed")
attempt("mount", mount)
