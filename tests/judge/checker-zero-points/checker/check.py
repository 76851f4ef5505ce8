import sys

# Passes every output that is the right number; gives the sample no points (exit 0, score 0), the
# way DMOJ's checkers pass a case with 0 points; exit 1 for a wrong number.
input_path, expected_path, output_path = sys.argv[1:4]
with open(expected_path) as fh:
    expected = fh.read().split()
with open(output_path) as fh:
    got = fh.read().split()
if got != expected:
    print(f"expected {expected}, got {got}", file=sys.stderr)
    sys.exit(1)
with open(input_path) as fh:
    sample = fh.read().strip() == "0"
print("0" if sample else "1")
print("the sample is worth nothing" if sample else "ok", file=sys.stderr)
