#!/usr/bin/env bash
# Refreshes the Python lock (requirements/runtime.txt and requirements/test.txt: exact versions with
# hashes, the build backend included) and runs the whole suite against it, so that an upgrade is a
# reviewed change of its own. Without arguments it keeps every pin that still satisfies
# pyproject.toml's ranges (use it after changing a range); `--upgrade` takes the newest versions
# the ranges allow; `--upgrade-package NAME[==VERSION]` (repeatable) moves one package.
#
# Why pip-tools: it resolves with pip itself, so the hashes it writes are those pip checks with
# --require-hashes, it reads pyproject.toml's ranges and extras directly, and it is a small,
# well-kept pure-Python tool (uv would do the same faster, but brings a second resolver whose
# behaviour differs from the pip that installs).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_TOOLS_VERSION=7.6.2
tools=.state/lock-venv
if [[ ! -x $tools/bin/pip-compile ]] || ! $tools/bin/pip-compile --version | grep -q "$PIP_TOOLS_VERSION"; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check "pip-tools==$PIP_TOOLS_VERSION"
fi
common=(-q --generate-hashes --allow-unsafe --all-build-deps --strip-extras --no-emit-index-url --no-emit-find-links "$@")
"$tools/bin/pip-compile" "${common[@]}" --extra test -o requirements/test.txt pyproject.toml
"$tools/bin/pip-compile" "${common[@]}" -o requirements/runtime.txt pyproject.toml
# The two locks resolve apart: a package in both must have one version, or the demo and the tests
# would run different code.
pins() { grep -E '^[A-Za-z0-9._-]+==' "$1" | cut -d' ' -f1 | sort; }
if drift=$(comm -23 <(pins requirements/runtime.txt) <(pins requirements/test.txt)) && [[ -n $drift ]]; then
  echo "update-lock: requirements/runtime.txt pins versions that requirements/test.txt does not:" >&2
  echo "$drift" >&2
  exit 1
fi
git --no-pager diff --stat -- requirements/ || true
exec bash scripts/test.sh
