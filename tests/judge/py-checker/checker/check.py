import sys
from pathlib import Path

words = Path(__file__).with_name("words.txt").read_text().split()
n = int(Path(sys.argv[1]).read_text())
try:
    d = int(Path(sys.argv[2]).read_text())
except ValueError:
    print(0)
    sys.exit(0)
if 1 < d < n and n % d == 0:
    print(1)
    print(words[0], file=sys.stderr)
else:
    print(0)
    print(words[1], file=sys.stderr)
