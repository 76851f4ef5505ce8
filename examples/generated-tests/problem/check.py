"""check.py INPUT OUTPUT: the output must be the sum of the input's numbers (exit 0 or 1)."""

import sys

with open(sys.argv[1]) as f:
    n, *numbers = map(int, f.read().split())
with open(sys.argv[2]) as f:
    got = f.read().split()
if got != [str(sum(numbers[:n]))]:
    print(f"expected one number, the sum of {n} integers; got {' '.join(got)[:40]!r}", file=sys.stderr)
    sys.exit(1)
