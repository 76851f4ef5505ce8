from probe import *  # attempt(), os, socket, sys

port = int(os.environ["HOST_PORT"])
attempt("host-loopback", lambda: socket.create_connection(("127.0.0.1", port), timeout=2))
