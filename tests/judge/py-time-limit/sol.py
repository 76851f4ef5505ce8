import sys
import time

if sys.stdin.read().strip() == "spin":
    while True:
        pass
time.sleep(60)  # idle: only the wall clock stops it
