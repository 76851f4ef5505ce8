#!/usr/bin/env python3
"""The guessing game's interactor (testlib's protocol: argv INPUT TRANSCRIPT ANSWER).

The test's input is `N SECRET QUERIES`. It tells the program N, then answers each `? x` with `<`
(the secret is smaller than x), `>` (larger) or `=`, until `! x`. Exit 0: accepted; 1: wrong
answer (the message on stderr); 3: the test's data is bad (the judge's fault, never the program's).
"""

import sys

with open(sys.argv[1]) as test:
    try:
        n, secret, queries = map(int, test.read().split())
    except ValueError:
        print("the test's input must be N SECRET QUERIES", file=sys.stderr)
        sys.exit(3)
log = open(sys.argv[2], "w")


def verdict(code: int, message: str) -> None:
    log.write(f"= {message}\n")
    print(message, file=sys.stderr)
    sys.exit(code)


def say(line: str) -> None:
    log.write(f"> {line}\n")
    try:
        print(line, flush=True)
    except BrokenPipeError:  # the program closed its stdin (or ended) before reading this
        sys.stdout = None  # nothing more is written there, not even at exit
        verdict(1, "the program stopped reading before the game was over")


say(str(n))
asked = 0
while True:
    line = sys.stdin.readline()
    if not line:
        verdict(1, f"the program ended without an answer after {asked} queries")
    log.write(f"< {line.rstrip()}\n")
    kind, _, value = line.strip().partition(" ")
    if kind not in ("?", "!") or not value.lstrip("-").isdigit():
        verdict(1, f"expected `? x` or `! x`, not {line.strip()[:40]!r}")
    guess = int(value)
    if kind == "!":
        if guess == secret:
            verdict(0, f"found {secret} in {asked} queries")
        verdict(1, f"answered {guess}, the number was {secret}")
    asked += 1
    if asked > queries:
        verdict(1, f"more than {queries} queries")
    say("<" if secret < guess else ">" if secret > guess else "=")
