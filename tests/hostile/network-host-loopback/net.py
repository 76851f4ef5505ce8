import os, socket, sys
def attempt(what, fn):
    try:
        fn()
        print("ESCAPED", what)
    except OSError as exc:
        print("blocked", what, type(exc).__name__)

port = int(os.environ["HOST_PORT"])
attempt("host-loopback", lambda: socket.create_connection(("127.0.0.1", port), timeout=2))
