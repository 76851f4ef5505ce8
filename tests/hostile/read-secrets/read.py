from probe import *  # attempt(), os, socket, sys

paths = ["/etc/shadow", "/root", "/var/run/docker.sock", "/run/docker.sock", "/home", "/proc/1/root/etc/shadow",
         "/run/cutor-spool", "/var/lib/docker", os.environ["SPOOL_PATH"]]
paths += [p for p in os.environ["VICTIM_PATHS"].split(":") if p]
for path in paths:
    def probe(path=path):
        if os.path.isdir(path):
            names = os.listdir(path)
            if not names:
                raise FileNotFoundError("empty")
        else:
            with open(path, "rb") as fh:
                fh.read(1)
    attempt(path, probe)
