#!/usr/bin/env bash
# Installs the package into a fresh virtualenv WITHOUT the lock, with the newest versions that
# pyproject.toml's ranges allow (default), or the lowest of the runtime dependencies (`--lowest`:
# every `>=X` of [project].dependencies taken as `==X`; the test tools stay the newest, since a
# linter's floor says nothing about what users install),
# then runs mypy, the import layers and the quick tier of the tests against them. It tells early
# when a new release (or the floor of a range) breaks the project, before a lock update has to.
#
# It is a warning, not a gate: .ci/run calls it with --report, which never fails the build (a
# landing must not be blocked by a release's own bug that the lock already keeps out), prints one
# line saying what broke, and leaves the log in .state/drift-*.log. Run it without --report to get
# its exit code.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=newest report=0
for arg in "$@"; do
  case $arg in
    --lowest) mode=lowest ;;
    --newest) mode=newest ;;
    --report) report=1 ;;
    *) echo "usage: $0 [--newest|--lowest] [--report]" >&2; exit 2 ;;
  esac
done
mkdir -p .state
venv=.state/drift-$mode log=.state/drift-$mode.log
check() {
  rm -rf "$venv" && python3 -m venv "$venv" || return 1
  local pip=("$venv/bin/pip" install -q --disable-pip-version-check)
  if [[ $mode == lowest ]]; then
    # The floor of every runtime range in pyproject.toml, pinned exactly.
    "$venv/bin/python" - >"$venv/floor.txt" <<'PY' || return 1
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for spec in project["dependencies"]:
    m = re.match(r"^([A-Za-z0-9._-]+)\s*>=\s*([^,;\s]+)", spec)
    if m:
        print(f"{m[1]}=={m[2]}")
PY
    "${pip[@]}" -c "$venv/floor.txt" '.[test]' || return 1
  else
    "${pip[@]}" --upgrade '.[test]' || return 1
  fi
  "$venv/bin/pip" freeze --exclude-editable | tr '\n' ' '; echo
  echo "== mypy"; "$venv/bin/mypy" cutor_spool || return 1
  echo "== lint-imports"; "$venv/bin/lint-imports" --no-cache || return 1
  echo "== quick tier"
  # The tests start the package's own CLI with this interpreter (sys.executable), so they run the
  # drift venv's versions throughout.
  "$venv/bin/python" -m pytest -q -p no:cacheprovider --quick || return 1
}
start=$SECONDS
check >"$log" 2>&1
rc=$?
if ((rc == 0)); then
  echo "drift check ($mode versions the ranges allow): mypy, layers and the quick tier pass ($((SECONDS - start)) s)"
else
  step=$(grep '^== ' "$log" | tail -n 1)
  echo "drift check ($mode versions the ranges allow) FAILED at ${step:-install} after $((SECONDS - start)) s: see $log" >&2
  echo "  versions: $(sed -n 1,400p "$log" | grep -m1 '==' | cut -c1-600)" >&2
  tail -n 15 "$log" | sed 's/^/  | /' >&2
fi
if ((report)); then exit 0; fi
exit $rc
