from probe import *  # attempt(), os, socket, sys

for path in ["/dev/mem", "/dev/kmem", "/dev/port", "/dev/sda", "/dev/vda"]:
    def probe(path=path):
        with open(path, "rb") as fh:
            fh.read(1)
    attempt(path, probe)
