#!/usr/bin/env bash
# Builds cutor-spool's container image, `cutor-spool:latest` (the image deploy/kubernetes names; a
# Nomad `docker` task may use it too), from this host's installed Debian 12 packages and this checkout,
# without pulling any image (docs/deploy.md, "Container image").
#
# What is in it: the files of python3.11, bubblewrap, util-linux (setpriv, prlimit, choom), procps,
# coreutils, dash/bash, grep, sed, findutils, mawk, diffutils, libseccomp2 (the stages' seccomp
# filter; libc-bin's ldconfig is how ctypes finds it), tini, gcc and libc6-dev (the languages' C compile stages), and of everything they depend
# on that is installed here (deploy/container/debian-tree.sh); then a virtualenv, /opt/cutor-spool,
# with requirements/runtime.txt installed from PyPI with --require-hashes and this checkout
# installed into it (not editable); the static launcher compiled now by runner/launcher.py's
# build_launcher and named in $CUTOR_SPOOL_LAUNCHER. Entrypoint: tini, then `cutor-spool`.
#
# What is not: Nix (an executor here runs submissions without `dependencies:` only, unless the
# operator mounts a Nix store and a nix binary; the builder needs Nix), Docker's engine or CLI (the
# Docker backend cannot be used from it), CA certificates (nothing in it speaks TLS), a spool, keys
# or secrets of any kind (the builder's signing key is a mounted Secret).
#
# Idempotent: the image carries a label with a hash of this script, the shared tree functions, the
# packages' versions, the lock and the project's sources; when the tagged image already has that
# hash nothing is rebuilt. Usage: build.sh [TAG]. Run as root (it uses a private mount namespace)
# with the engine running (scripts/dockerd.sh) and PyPI reachable (pip's cache makes a rebuild
# quick).
set -euo pipefail

TAG=${1:-cutor-spool:latest}
HERE=$(cd "$(dirname "$0")" && pwd)
CHECKOUT=$(cd "$HERE/../.." && pwd)
LIB=$HERE/debian-tree.sh
PACKAGES=(dash bash coreutils grep sed findutils mawk diffutils procps util-linux bubblewrap tini
  libseccomp2 libc-bin python3.11 python3.11-minimal libpython3.11-stdlib python3.11-venv gcc libc6-dev)
# Dependencies left out on purpose: the sanitizer/profiler runtimes (only -fsanitize needs them),
# dpkg, perl and debconf (no package is ever installed in the image), the init system's helpers.
SKIP=(libasan8 libtsan2 liblsan0 libubsan1 libhwasan0 libgprofng0 dpkg perl-base debconf
  init-system-helpers python3-pip-whl python3-setuptools-whl)
VENV=/opt/cutor-spool

# shellcheck source=debian-tree.sh
source "$LIB"
closure=$(closure "${PACKAGES[*]}" "${SKIP[*]}") || { echo "build.sh: failed" >&2; exit 1; }

# The project as pip would package it: pyproject.toml, README.md and the package (no caches).
sources() {
  (cd "$CHECKOUT" && find pyproject.toml README.md cutor_spool -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort)
}
hash=$( (cat "$0" "$LIB" "$CHECKOUT/requirements/runtime.txt"; echo "$closure"
  cd "$CHECKOUT" && sources | xargs sha256sum) | sha256sum | cut -c1-16)
up_to_date "$TAG" "$hash" && exit 0

make_tree "$closure"  # sets $work and $root
mkdir -p "$work/src" "$root$VENV"
(cd "$CHECKOUT" && sources | tar -cf - -T -) | tar -C "$work/src" -xf -

# The virtualenv is made at its final path, /opt/cutor-spool, by the host's /usr/bin/python3.11 (the
# one the tree has), in a private mount namespace where an overlay on the host's /opt takes the
# writes (the host's /opt stays as it was, and pip's configured local indexes there stay visible):
# its scripts' first lines and pyvenv.cfg name the paths the image has. ensurepip's pip comes from
# the host's python3-pip-whl (offline); the lock's wheels from pip's configured index (PyPI), checked
# against the lock's hashes. Then the launcher, built by the project's own build_launcher (static:
# it runs in any sandbox).
mkdir -p "$work/upper" "$work/overlay"
unshare --mount --propagation private /bin/bash -euo pipefail -c '
  mount -t overlay overlay -o "lowerdir=/opt,upperdir=$1/upper,workdir=$1/overlay" /opt
  /usr/bin/python3.11 -m venv --clear "$2"
  pip=("$2/bin/pip" install -q --disable-pip-version-check --no-deps)
  { "${pip[@]}" --require-hashes -r "$3/requirements/runtime.txt" && "${pip[@]}" --no-build-isolation "$1/src"; } \
    >"$1/pip.log" 2>&1 || { cat "$1/pip.log" >&2; exit 1; }
  "$2/bin/pip" uninstall -q -y pip
  env -u CUTOR_SPOOL_LAUNCHER "$2/bin/python" -c "
import sys
from pathlib import Path
from cutor_spool.runner.launcher import build_launcher
print(build_launcher(Path(sys.argv[1])))" "$2/libexec" >"$1/launcher"
  cp -a "$2/." "$1/root$2/"
' build "$work" "$VENV" "$CHECKOUT"
launcher=$(cat "$work/launcher")
[[ "$launcher" == "$VENV/libexec/cutor-launch-"* && -x "$root$launcher" ]] || {
  echo "build.sh: no launcher built ($launcher)" >&2
  exit 1
}
mkdir -p "$root/usr/local/bin"
ln -s "$VENV/bin/cutor-spool" "$root/usr/local/bin/cutor-spool"

# Sanity: the CLI starts and a C program compiles and runs in the tree before it becomes an image.
chroot "$root" /bin/sh -c 'cutor-spool --version >/dev/null && bwrap --version >/dev/null \
  && echo "int main(){return 0;}" >/tmp/t.c && cc -o /tmp/t /tmp/t.c && /tmp/t && rm -f /tmp/t /tmp/t.c'

import_tree "$root" "$TAG" "$hash" \
  --change "ENV CUTOR_SPOOL_LAUNCHER=$launcher" \
  --change 'WORKDIR /' \
  --change 'ENTRYPOINT ["/usr/bin/tini", "--", "cutor-spool"]' \
  --change 'CMD ["--help"]'
