#!/usr/bin/env python3
"""The manager of a communication task (CMS's kind): argv is INPUT, then a pair of FIFOs per copy
of the program, `from_user_<i> to_user_<i>`; the test's input is on stdin too. It sends copy i the
i-th number, reads back its double, and judges as a checker program does: exit 0 with the score
fraction on stdout (CMS's way), exit 1 for a wrong answer; the message on stderr.
"""

import sys

fifos = sys.argv[2:]
pairs = [(fifos[i], fifos[i + 1]) for i in range(0, len(fifos), 2)]
numbers = list(map(int, sys.stdin.read().split()))
to_user = [open(to, "w") for _, to in pairs]  # each open waits until the copy is there
from_user = [open(back) for back, _ in pairs]
for number, out in zip(numbers, to_user):
    out.write(f"{number}\n")
    out.flush()
answers = [int(f.readline() or -1) for f in from_user]
if answers == [2 * n for n in numbers]:
    print(1)
    print(f"{len(pairs)} copies doubled {numbers}", file=sys.stderr)
    sys.exit(0)
print(f"expected {[2 * n for n in numbers]}, got {answers}", file=sys.stderr)
sys.exit(1)
