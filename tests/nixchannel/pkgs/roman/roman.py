"""Roman numerals: the stand-in channel's small Python package (the API of PyPI's `roman`)."""

__version__ = "4.2-standin"

_NUMERALS = (
    ("M", 1000), ("CM", 900), ("D", 500), ("CD", 400), ("C", 100), ("XC", 90),
    ("L", 50), ("XL", 40), ("X", 10), ("IX", 9), ("V", 5), ("IV", 4), ("I", 1),
)


class RomanError(Exception):
    pass


class OutOfRangeError(RomanError):
    pass


class InvalidRomanNumeralError(RomanError):
    pass


def toRoman(n):  # noqa: N802 - the name of the original API
    if not isinstance(n, int):
        raise RomanError("decimals can not be converted")
    if not 0 < n < 5000:
        raise OutOfRangeError("number out of range (must be 1..4999)")
    out = []
    for numeral, value in _NUMERALS:
        while n >= value:
            out.append(numeral)
            n -= value
    return "".join(out)


def fromRoman(s):  # noqa: N802 - the name of the original API
    if not s:
        raise InvalidRomanNumeralError("input can not be blank")
    total, i = 0, 0
    for numeral, value in _NUMERALS:
        while s.startswith(numeral, i):
            total += value
            i += len(numeral)
    if i != len(s) or toRoman(total) != s:
        raise InvalidRomanNumeralError(f"invalid Roman numeral: {s}")
    return total
