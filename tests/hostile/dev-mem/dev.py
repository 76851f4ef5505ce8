import os, socket, sys
def attempt(what, fn):
    try:
        fn()
        print("ESCAPED", what)
    except OSError as exc:
        print("blocked", what, type(exc).__name__)

for path in ["/dev/mem", "/dev/kmem", "/dev/port", "/dev/sda", "/dev/vda"]:
    def probe(path=path):
        with open(path, "rb") as fh:
            fh.read(1)
    attempt(path, probe)
