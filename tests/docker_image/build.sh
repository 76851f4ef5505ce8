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

# The closure of PACKAGES over Depends/Pre-Depends, among installed packages (the first installed
# alternative of an `a | b` dependency; virtual packages through their installed provider).
closure=$(python3 - "${PACKAGES[*]}" "${SKIP[*]}" <<'PY'
import subprocess, sys

fmt = "${Package}\t${db:Status-Abbrev}\t${Provides}\t${Depends}, ${Pre-Depends}\t${Version}\n"
rows = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True, check=True).stdout
deps, providers, versions = {}, {}, {}
for row in rows.splitlines():
    name, status, provides, depends, version = row.split("\t")
    if not status.startswith("ii"):
        continue
    deps[name], versions[name] = depends, version
    for item in provides.split(","):
        if item.strip():
            providers.setdefault(item.split()[0], name)
wanted, skip = sys.argv[1].split(), set(sys.argv[2].split())
missing = [n for n in wanted if n not in deps]
if missing:
    sys.exit(f"build.sh: not installed on this host: {' '.join(missing)} (apt-get install them)")
seen, todo = set(), list(wanted)
while todo:
    name = todo.pop().split(":")[0]
    name = name if name in deps else providers.get(name, "")
    if not name or name in seen or name in skip:
        continue
    seen.add(name)
    for clause in deps[name].split(","):
        for alternative in clause.split("|"):
            dep = alternative.split()[0].split(":")[0] if alternative.strip() else ""
            if dep in deps or dep in providers:
                todo.append(dep)
                break
for name in sorted(seen):
    print(name, versions[name])
PY
)

hash=$( (cat "$0"; echo "$closure") | sha256sum | cut -c1-16)
current=$(docker image inspect -f '{{index .Config.Labels "cutor-spool.build"}}' "$TAG" 2>/dev/null || true)
if [[ "$current" == "$hash" ]]; then
  echo "build.sh: $TAG is up to date ($hash)" >&2
  exit 0
fi

work=$(mktemp -d /tmp/cutor-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/usr"
# The host's merged /usr: /bin, /lib... are symlinks into /usr; the tree has the same shape so that
# dpkg's paths (/bin/dash, /lib/x86_64-linux-gnu/...) land where the host has them.
for name in bin sbin lib lib32 lib64 libx32; do
  if [[ -L /$name ]]; then
    ln -s "$(readlink "/$name")" "$root/$name"
    mkdir -p "$root/usr/${name}"
  fi
done

names=$(awk '{print $1}' <<<"$closure")
# shellcheck disable=SC2086 # one word per package
dpkg-query -L $names 2>/dev/null \
  | grep -v -E '^/usr/share/(doc|man|info|locale|lintian|bug|bash-completion)(/|$)' \
  | grep -v -E '^/(etc/(init\.d|cron|logrotate)|var)' \
  | sort -u >"$work/files"
# --no-recursion: the lists name every file; --keep-directory-symlink: /bin stays a symlink.
tar -C / --no-recursion --ignore-failed-read -cf - -T "$work/files" 2>/dev/null \
  | tar -C "$root" --keep-directory-symlink -xf -

ln -sf gcc "$root/usr/bin/cc"
ln -sf g++ "$root/usr/bin/c++"
mkdir -p "$root/etc" "$root/work" "$root/run" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
ldconfig -r "$root"

# Sanity: the suites' programs run in the tree before it becomes an image.
chroot "$root" /bin/sh -c 'python3 -c "print(1)" >/dev/null && echo "int main(){return 0;}" >/tmp/t.c \
  && cc -o /tmp/t /tmp/t.c && /tmp/t && cp /tmp/t.c /tmp/t.cc && g++ -o /tmp/t /tmp/t.cc && /tmp/t \
  && rm -f /tmp/t /tmp/t.c /tmp/t.cc'

tar -C "$root" -cf - . | docker import \
  --change "LABEL cutor-spool.build=$hash" \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
  --change 'WORKDIR /work' \
  - "$TAG" >/dev/null
echo "build.sh: built $TAG ($hash, $(du -sh "$root" | cut -f1))" >&2
