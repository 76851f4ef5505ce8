# shellcheck shell=bash
# Functions that make a Docker image from this host's installed Debian packages, offline (no
# registry is pulled from): sourced by deploy/container/build.sh (the product's image) and
# tests/docker_image/build.sh (the sandbox test image).
#
#   closure "PKG..." "SKIP..."   the closure of PKG over Depends/Pre-Depends among installed
#                                packages, less SKIP: `name version` lines (stdout)
#   populate ROOT "CLOSURE"      ROOT gets the files (`dpkg-query -L`) of those packages, less
#                                documentation, man pages, locales and init/cron files, in the
#                                host's merged-/usr shape
#   finish ROOT                  the compilers' plain names Debian makes outside dpkg's lists
#                                (cc, c++), empty /work /run /proc /sys /dev /tmp, a minimal
#                                /etc/passwd and /etc/group (root, nobody), an ld.so.cache
#   make_tree "CLOSURE"          populate and finish a fresh tree: sets $work (a temporary
#                                directory, removed when the script exits) and $root ($work/root)
#   up_to_date TAG HASH          true (and says so) when the tagged image is labelled with HASH
#   current_hash TAG             the `cutor-spool.build` label of the tagged image, if any
#   import_tree ROOT TAG HASH [--change ...]   the tree as TAG, labelled with HASH, PATH set to
#                                /usr/local/bin:/usr/bin:/bin (the image the tag named before is
#                                removed when nothing else uses it); says what it built
#
# Idempotence is the callers': they hash their inputs (their scripts, the closure's versions, ...)
# and build only when the tagged image's label differs (`up_to_date "$TAG" "$hash" && exit 0`).

# The first installed alternative of an `a | b` dependency; virtual packages through their
# installed provider. Exits non-zero naming the packages that are not installed.
closure() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
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
    sys.exit(f"not installed on this host: {' '.join(missing)} (apt-get install them)")
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
}

populate() {
  local root=$1 closure=$2 name names
  mkdir -p "$root/usr"
  # The host's merged /usr: /bin, /lib... are symlinks into /usr; the tree has the same shape so
  # that dpkg's paths (/bin/dash, /lib/x86_64-linux-gnu/...) land where the host has them.
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
    | sort -u >"$root.files"
  # --no-recursion: the lists name every file; --keep-directory-symlink: /bin stays a symlink.
  tar -C / --no-recursion --ignore-failed-read -cf - -T "$root.files" 2>/dev/null \
    | tar -C "$root" --keep-directory-symlink -xf -
  rm -f "$root.files"
}

finish() {
  local root=$1 compiler alias
  # Debian makes cc and c++ with update-alternatives, outside dpkg's lists: the tree gets them as
  # symlinks to the compilers it holds.
  for compiler in gcc:cc g++:c++; do
    alias=${compiler#*:} compiler=${compiler%:*}
    if [[ -e "$root/usr/bin/$compiler" ]]; then ln -sf "$compiler" "$root/usr/bin/$alias"; fi
  done
  mkdir -p "$root/etc" "$root/work" "$root/run" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  ldconfig -r "$root"
}

make_tree() {
  work=$(mktemp -d /tmp/cutor-image.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  root=$work/root
  populate "$root" "$1"
  finish "$root"
}

up_to_date() {
  if [[ "$(current_hash "$1")" != "$2" ]]; then return 1; fi
  echo "${0##*/}: $1 is up to date ($2)" >&2
}

current_hash() {
  docker image inspect -f '{{index .Config.Labels "cutor-spool.build"}}' "$1" 2>/dev/null || true
}

import_tree() {
  local root=$1 tag=$2 hash=$3 previous
  shift 3
  previous=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  tar -C "$root" -cf - . | docker import --change "LABEL cutor-spool.build=$hash" \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' "$@" - "$tag" >/dev/null
  # The image the tag leaves, unless a container still uses it or another tag names it.
  if [[ -n "$previous" ]]; then docker image rm "$previous" >/dev/null 2>&1 || true; fi
  echo "${0##*/}: built $tag ($hash, $(du -sh "$root" | cut -f1))" >&2
}
