from probe import *  # attempt(), os, socket, sys

import signal

# The launcher (the job's parent) reports the job's wait status through /run/cutor/.exit with a
# token only it and the worker know. Steal it, read the token, or forge a clean exit, then crash.
attempt("read-report", lambda: os.open("/run/cutor/.exit", os.O_RDONLY | os.O_NONBLOCK))
attempt("parent-environ", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
attempt("parent-fds", lambda: os.listdir(f"/proc/{os.getppid()}/fd"))
print("token", "visible" if "CUTOR_REPORT" in os.environ else "absent", flush=True)
fd = os.open("/run/cutor/.exit", os.O_WRONLY | os.O_NONBLOCK)
for token in ("-", "", "0", os.environ.get("CUTOR_REPORT", "x")):
    os.write(fd, f"{token} 0\n".encode())
print("forged", flush=True)
os.kill(os.getpid(), signal.SIGSEGV)
