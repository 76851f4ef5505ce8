import sys

case = sys.stdin.read().strip()
print({
    "close": "2.0009",  # within 1e-3
    "far": "2.0011",  # beyond 1e-3
    "relative": "1000000.5",  # 5e-7 relative, but relative tolerance is off
    "word": "two",
    "nan": "nan",
    "short": "1 2",
}[case])
