# Links programs of the host (/usr/bin) into $out/bin: the stand-in's packages are the host's own
# tools. A missing program fails the build with a clear message instead of a dangling link.
set -eu
mkdir=/usr/bin/mkdir ln=/usr/bin/ln
$mkdir -p "$out/bin"
for program in $programs; do
    # -L too: Debian's alternatives (cc, awk) are symlinks into /etc, which builds do not see.
    if [ ! -x "/usr/bin/$program" ] && [ ! -L "/usr/bin/$program" ]; then
        echo "the host has no /usr/bin/$program (install it, or drop $pname from the channel)" >&2
        exit 1
    fi
    $ln -s "/usr/bin/$program" "$out/bin/$program"
done
if [ -n "${setupHook:-}" ]; then
    $mkdir -p "$out/nix-support"
    printf '%s\n' "$setupHook" > "$out/nix-support/setup-hook"
fi
