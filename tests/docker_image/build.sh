#!/usr/bin/env bash
# Builds the Docker image the tests run in, `cutor-spool-sandbox:test`, from this host's installed
# Debian packages (no registry is reachable from test machines, so nothing is pulled).
#
# What is in it: the files (`dpkg-query -L`) of dash, bash, coreutils, grep, sed, findutils, mawk,
# diffutils, procps (ps), util-linux (setsid), python3 (python3-minimal, python3.11-minimal,
# libpython3.11-stdlib), gcc, g++, nasm and libc6-dev, and of everything they depend on that is installed
# here, less documentation, man pages, locales and the sanitizer/profiler runtimes (libasan & co.:
# only -fsanitize needs them). Then a `cc` symlink (Debian makes it with update-alternatives,
# outside dpkg's lists), an ld.so.cache for the tree, a minimal /etc/passwd, and empty /work, /tmp,
# /run. About 280 MB: enough for the hostile and judge suites' programs (sh, coreutils, ps, setsid,
# python3, a C compiler in compile stages) and, of the toolchain matrix (tests/test_toolchains.py),
# C, C++, Python 3 and NASM; the other languages there (Java, Go, Rust, PyPy, Free Pascal, Node.js,
# Perl, Ruby: 30 to 300 MB each) are left out to keep the image quick to build (docs/docker.md).
#
# Idempotent: the image carries a label with a hash of this script and of the packages' versions;
# when the tagged image already has that hash nothing is rebuilt. Usage: build.sh [TAG]. Run as root
# with the engine running (scripts/dockerd.sh).
set -euo pipefail

TAG=${1:-cutor-spool-sandbox:test}
PACKAGES=(dash bash coreutils grep sed findutils mawk diffutils procps util-linux
  python3-minimal python3.11-minimal libpython3.11-stdlib gcc g++ nasm libc6-dev)
# Dependencies left out on purpose: big and never used by the suites' programs.
SKIP=(libasan8 libtsan2 liblsan0 libubsan1 libhwasan0 libgprofng0 dpkg perl-base debconf
  init-system-helpers)

# The tree is made by deploy/container/debian-tree.sh, shared with the product's image.
LIB=$(cd "$(dirname "$0")/../../deploy/container" && pwd)/debian-tree.sh
# shellcheck source=../../deploy/container/debian-tree.sh
source "$LIB"
closure=$(closure "${PACKAGES[*]}" "${SKIP[*]}") || { echo "build.sh: failed" >&2; exit 1; }

hash=$( (cat "$0" "$LIB"; echo "$closure") | sha256sum | cut -c1-16)
up_to_date "$TAG" "$hash" && exit 0

make_tree "$closure"  # sets $work and $root

# Sanity: the suites' programs run in the tree before it becomes an image.
chroot "$root" /bin/sh -c 'python3 -c "print(1)" >/dev/null && echo "int main(){return 0;}" >/tmp/t.c \
  && cc -o /tmp/t /tmp/t.c && /tmp/t && cp /tmp/t.c /tmp/t.cc && g++ -o /tmp/t /tmp/t.cc && /tmp/t \
  && rm -f /tmp/t /tmp/t.c /tmp/t.cc'

import_tree "$root" "$TAG" "$hash" --change 'WORKDIR /work'
