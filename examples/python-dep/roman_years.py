"""Reads years, one per line, and prints each in Roman numerals."""

import sys

import roman

for line in sys.stdin:
    line = line.strip()
    if line:
        print(f"{line} = {roman.toRoman(int(line))}")
