#!/usr/bin/env bash
# Sets up everything the tests need and runs them: style (ruff), types (mypy), then pytest against
# real components (bubblewrap, cgroups, Nix, Docker, Chromium). Run as root on Debian 12.
# Arguments go to pytest: `--quick` leaves out the tests marked slow (see tests/conftest.py).
set -euo pipefail
if [[ $EUID -ne 0 ]]; then  # the sandbox needs root (jobs themselves never run as root)
  command -v sudo >/dev/null || { echo "$0: run this as root" >&2; exit 1; }
  exec sudo -E bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
bash scripts/dockerd.sh
.venv/bin/ruff check cutor_spool tests benchmarks
.venv/bin/ruff format --check cutor_spool tests benchmarks
.venv/bin/mypy cutor_spool
# The layers of docs/architecture.md (pyproject.toml [tool.importlinter]); its report only when broken.
.venv/bin/lint-imports --no-cache >.state/lint-imports.log || { cat .state/lint-imports.log; exit 1; }
exec .venv/bin/pytest "$@"
