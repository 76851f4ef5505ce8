import sys

n, *values = map(int, sys.stdin.read().split())
print(max(values))  # the misreading: the largest, not the sum
