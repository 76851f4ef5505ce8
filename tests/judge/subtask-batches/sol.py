import sys

# Echoes its number, except that it gets every "wrong N" input wrong.
text = sys.stdin.read().split()
print(0 if text[0] == "wrong" else text[-1])
