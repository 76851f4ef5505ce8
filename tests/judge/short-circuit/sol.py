import sys

n = int(sys.stdin.read())
print(n if n != 2 else -1)
