#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, as root: install what is needed, make a local spool
# (./spool by default), start an executor (bubblewrap backend) and a Nix builder, submit every
# bundled example, show each result, regenerate the status page, and stop the workers.
#
# This machine cannot reach the Nix binary cache, so unless spool.yaml already names a nixpkgs, the
# spool is pointed at the small offline stand-in channel shipped with the tests (tests/nixchannel),
# which wraps the host's programs. In production, set `nix.nixpkgs` to a pinned real nixpkgs.
set -euo pipefail
if [[ $EUID -ne 0 ]]; then  # the sandbox needs root (jobs themselves never run as root)
  command -v sudo >/dev/null || { echo "$0: run this as root" >&2; exit 1; }
  exec sudo -E bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
bash scripts/setup.sh

SPOOL=${SPOOL:-spool}
CLI=(.venv/bin/cutor-spool --spool "$SPOOL")
LOGS=${LOGS:-.state/demo}
mkdir -p "$LOGS"

"${CLI[@]}" init >/dev/null
if grep -q '^  nixpkgs: null' "$SPOOL/spool.yaml"; then
  # The stand-in's builders are the host's bash and tools: Nix's build sandbox must expose them.
  sed -i "s|^  nixpkgs: null.*|  nixpkgs: $PWD/tests/nixchannel  # offline stand-in channel: no Nix cache here\\
  sandbox_paths: [/bin, /usr, /lib, /lib64]|" "$SPOOL/spool.yaml"
  echo "demo: nix.nixpkgs -> tests/nixchannel (the offline stand-in channel)"
fi

"${CLI[@]}" executor --concurrency 2 >"$LOGS/executor.log" 2>&1 &
executor=$!
"${CLI[@]}" builder >"$LOGS/builder.log" 2>&1 &
builder=$!
stop() { kill -TERM "$executor" "$builder" 2>/dev/null || true; wait "$executor" "$builder" 2>/dev/null || true; }
trap stop EXIT

stamp=$(date +%Y%m%d-%H%M%S)
failures=0
for example in examples/*/; do
  [[ -f "$example/submission.yaml" ]] || continue
  name=$(basename "$example")
  id="demo-$name-$stamp"
  echo
  echo "== $example"
  code=0
  "${CLI[@]}" submit "$example" --id "$id" --wait --timeout 300 || code=$?
  state=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' \
    "$SPOOL/done/$id/result/status.json" 2>/dev/null || echo missing)
  if [[ -f "$SPOOL/done/$id/result/run.json" ]]; then
    echo "-- stdout of the run stage:"
    .venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["stdout"], end="")' \
      "$SPOOL/done/$id/result/run.json"
  fi
  echo "-- exit code $code, state $state, results in $SPOOL/done/$id/result/"
  # A judged example may rightly score partial or zero (exit 1); invalid or error is a failure.
  if [[ "$state" != "done" ]]; then failures=$((failures + 1)); fi
done

"${CLI[@]}" status-page >/dev/null
echo
"${CLI[@]}" list --limit 10
echo
echo "status page: $SPOOL/status/index.html   worker logs: $LOGS/"
exit "$failures"
