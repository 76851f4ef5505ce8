from probe import *  # attempt(), os, socket, sys

import signal
for sig in (signal.SIGSTOP, signal.SIGKILL):
    try:
        os.kill(1, sig)
    except OSError:
        pass
attempt("executor", lambda: os.kill(int(os.environ["EXECUTOR_PID"]), signal.SIGKILL))
print("still here", flush=True)
