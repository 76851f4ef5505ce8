#!/usr/bin/env bash
# Installs what cutor-spool needs on Debian 12, idempotently: system tools and the virtualenv;
# `--docker` adds Docker's engine (the second backend), `--tests` everything the test suite needs
# (Docker included). Run as root.
set -euo pipefail
if [[ $EUID -ne 0 ]]; then  # the sandbox needs root (jobs themselves never run as root)
  command -v sudo >/dev/null || { echo "$0: run this as root" >&2; exit 1; }
  exec sudo -E bash "$0" "$@"
fi
cd "$(dirname "$0")/.."

# Runtime: the sandbox (bubblewrap, tini, util-linux's prlimit/setpriv, libseccomp2 for the stages' seccomp
# filter), Nix. Docker's engine only for its backend (--docker) and the tests.
APT_RUNTIME=(bubblewrap tini util-linux libseccomp2 nix-bin ca-certificates python3 python3-venv gcc libc6-dev)
APT_DOCKER=(docker.io)
# Tests: a static busybox for Docker test images, libfaketime for clock-skew tests, Chromium for the page,
# systemd for `systemd-analyze verify` of the unit templates (no service is started), ipfs-cid (`ipfs_cid`)
# to check the content store's CIDs against an independent implementation. Then the toolchain matrix
# (tests/test_toolchains.py: C, C++, Python 3, PyPy 3, Java, Go, Free Pascal, Node.js, Perl, Ruby,
# Rust, NASM compiled and run in the sandbox): about 24 s to install those not installed above
# (fp-compiler, golang-go, pypy3, ruby, nasm, rustc) from a nearby mirror, without recommends.
# Slurm and munge for tests/test_slurm.py's single-node cluster, which runs its own munged, slurmctld
# and slurmd with a conf, key and sockets under /run: it uses none of the packages' services or files.
APT_TESTS=(busybox-static libfaketime chromium procps iproute2 xz-utils systemd ipfs-cid
  g++ pypy3 openjdk-17-jdk-headless golang-go fp-compiler nodejs perl ruby rustc nasm slurm-wlm munge)

want=("${APT_RUNTIME[@]}")
case "${1:-}" in
  --tests) want+=("${APT_DOCKER[@]}" "${APT_TESTS[@]}") ;;
  --docker) want+=("${APT_DOCKER[@]}") ;;
  "") ;;
  *) echo "usage: $0 [--docker | --tests]" >&2; exit 2 ;;
esac

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Nix builds as root run as the `nixbld` build users (never as root). Debian's nix-bin does not make
# them (its nix-setup-systemd does, together with a daemon these workers do not use): make the group
# and 8 users as Nix's own installer does, so that a build on a fresh machine does not fail with
# "the group 'nixbld' specified in 'build-users-group' does not exist".
if ! getent group nixbld >/dev/null; then
  groupadd --system nixbld
fi
for i in $(seq 1 8); do
  if ! getent passwd "nixbld$i" >/dev/null; then
    useradd --system --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin \
      --gid nixbld --groups nixbld --comment "Nix build user $i" "nixbld$i"
  fi
done

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
# Python packages come from a lock with exact versions and hashes (requirements/*.txt, made by
# scripts/update-lock.sh): the same bytes on every machine, whatever PyPI published since. The
# package itself is installed last, without dependencies and without an isolated build (whose
# setuptools would come from PyPI unpinned): its build backend is in the lock too.
lock=requirements/runtime.txt
if [[ "${1:-}" == "--tests" ]]; then lock=requirements/test.txt; fi
mkdir -p .state
pip=(.venv/bin/pip install -q --disable-pip-version-check)
if ! { "${pip[@]}" --require-hashes --no-deps -r "$lock" && "${pip[@]}" --no-deps --no-build-isolation -e .; } \
  >.state/pip.log 2>&1; then
  cat .state/pip.log >&2
  exit 1
fi
