"""check.py INPUT OUTPUT: the output should be floor(sqrt(N)); 1 point, 0.5 if off by one."""

import math
import sys

with open(sys.argv[1]) as f:
    n = int(f.read())
with open(sys.argv[2]) as f:
    text = f.read().strip()
if not text.isdigit():
    print(f"not a non-negative integer: {text[:40]!r}", file=sys.stderr)
    sys.exit(1)
root, got = math.isqrt(n), int(text)
if got == root:
    print(1)
elif abs(got - root) == 1:
    print(0.5)
    print("off by one", file=sys.stderr)
else:
    print(0)
    print("not the square root rounded down", file=sys.stderr)
