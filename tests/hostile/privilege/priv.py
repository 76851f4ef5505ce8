from probe import *  # attempt(), os, socket, sys

attempt("setuid0", lambda: os.setuid(0))
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def unshare_user():
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), "unshare")
attempt("userns", unshare_user)
attempt("chroot", lambda: os.chroot("/tmp"))
print("uid", os.getuid(), "euid", os.geteuid())
