import sys

print(1 / int(sys.stdin.read()))
