"""gen.py N SEED: N integers of up to 10^12 in absolute value, deterministic for a seed."""

import random
import sys

n, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
out = [str(n), " ".join(str(rng.randint(-(10**12), 10**12)) for _ in range(n))]
sys.stdout.write("\n".join(out) + "\n")
