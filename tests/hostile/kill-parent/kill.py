import os, socket, sys
def attempt(what, fn):
    try:
        fn()
        print("ESCAPED", what)
    except OSError as exc:
        print("blocked", what, type(exc).__name__)

import signal
for sig in (signal.SIGSTOP, signal.SIGKILL):
    try:
        os.kill(1, sig)
    except OSError:
        pass
attempt("executor", lambda: os.kill(int(os.environ["EXECUTOR_PID"]), signal.SIGKILL))
print("still here", flush=True)
