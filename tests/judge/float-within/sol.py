import sys

case = sys.stdin.read().strip()
print({
    "pi": "3.1415929",  # 3.8e-7 away: within 1e-6
    "big": "1.0000005e12",  # 5e5 away, but 5e-7 relative
    "mixed": "area 2.5000001\nperimeter 6",
    "spelled": "1e-3 -INF",
}[case])
