"""Shared by the hostile programs (the test copies it next to each one): try something the sandbox
must forbid and say how it went. An `ESCAPED` line on stdout fails the test."""
import os, socket, sys  # noqa: F401 - the programs use them after `from probe import *`


def attempt(what, fn):
    try:
        fn()
        print("ESCAPED", what)
    except OSError as exc:
        print("blocked", what, type(exc).__name__)
