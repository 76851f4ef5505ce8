#!/bin/sh
# Drop a submission into a cutor-spool spool, wait for its result, show it, and exit with a status
# a cron job or a CI pipeline can act on.
#
#   drop-and-wait.sh SPOOL DIRECTORY [TIMEOUT_SECONDS]
#
# Exit status (the same as `cutor-spool submit --wait`):
#   0  it ran and succeeded (outcome ok, or accepted when judged)
#   1  it ran and failed (compile error, runtime error, a limit, wrong answer, partial score, ...)
#   2  bad usage
#   3  the submission itself is invalid (the reasons are printed)
#   4  the system gave up on it (state error, with the reason)
#   5  no result within TIMEOUT_SECONDS (default 600); it stays queued and may still run
#
# With the `cutor-spool` command installed it uses `cutor-spool submit --wait` (which also checks
# the directory before dropping it). Without it (or with CUTOR_SPOOL_PLAIN=1) it speaks the spool
# protocol itself, so a host that only mounts the spool can submit: copy into SPOOL/tmp/, mark the
# copy ready, rename it into SPOOL/incoming/ (one atomic step), then watch SPOOL/done/<id>/.
# Reading the result needs python3 (for JSON). Set CUTOR_SPOOL_ID to choose the id.
set -eu

usage() {
    echo "usage: $0 SPOOL DIRECTORY [TIMEOUT_SECONDS]" >&2
    exit 2
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage
spool=$1
dir=$2
timeout=${3:-600}
[ -d "$spool/incoming" ] || { echo "$spool is not a spool (no incoming/)" >&2; exit 2; }
[ -f "$dir/submission.yaml" ] || { echo "$dir has no submission.yaml" >&2; exit 2; }
case $timeout in '' | *[!0-9]*) usage ;; esac

# Ids: letters, digits, '_' and '-'; time-ordered and unique without coordination.
id=${CUTOR_SPOOL_ID:-ci-$(date -u +%Y%m%d-%H%M%S)-$$}
result="$spool/done/$id/result"

if command -v cutor-spool >/dev/null 2>&1 && [ -z "${CUTOR_SPOOL_PLAIN:-}" ]; then
    status=0
    cutor-spool --spool "$spool" submit "$dir" --id "$id" --wait --timeout "$timeout" >/dev/null || status=$?
    # No result in done/: a usage error, an invalid submission caught before it was dropped (the
    # CLI printed why), or the timeout.
    [ -f "$result/status.json" ] || exit "$status"
else
    staging="$spool/tmp/drop-$id"
    cp -R "$dir" "$staging"
    : >"$staging/.ready"
    mv "$staging" "$spool/incoming/$id"
    waited=0
    while [ ! -f "$result/status.json" ]; do
        if [ "$waited" -ge "$timeout" ]; then
            echo "$id: no result after ${timeout}s (still queued or running)" >&2
            exit 5
        fi
        sleep 1
        waited=$((waited + 1))
    done
fi

# Show what happened, and exit with the status it maps to.
exec python3 - "$result" <<'PY'
import json, pathlib, sys

result = pathlib.Path(sys.argv[1])
status = json.loads((result / "status.json").read_text())
state, outcome = status.get("state"), status.get("outcome")
line = f"{status.get('id')}: {state}" + (f" ({outcome})" if outcome else "")
if status.get("score") is not None:
    line += f", score {status['score']:g}/{status.get('max_score', 0):g}"
print(line)
for err in status.get("errors") or []:
    print(f"  invalid: {err.get('where')}: {err.get('message')}")
if status.get("reason"):
    print(f"  reason: {status['reason']}")
for stage in ("compile", "run"):
    path = result / f"{stage}.json"
    if path.exists():
        out = json.loads(path.read_text())
        print(f"--- {stage}: {out.get('status')}, exit {out.get('exit_code')}, {out.get('cpu_time', 0):.3f}s CPU")
        for stream in ("stdout", "stderr"):
            if out.get(stream):
                print(f"--- {stage} {stream}:\n" + out[stream].rstrip("\n"))
for name, verdict in (status.get("tests") or {}).items():
    print(f"  test {name}: {verdict}")
if state == "invalid":
    sys.exit(3)
if state == "error":
    sys.exit(4)
sys.exit(0 if outcome in ("ok", "accepted") else 1)
PY
