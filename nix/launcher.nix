# The stage launcher (cutor_spool/runner/launcher.c), compiled ahead of time and linked statically
# (musl, through nixpkgs' pkgsStatic). With it the package needs no C compiler at run time:
# bubblewrap stages start through it (0.5 ms) rather than through prlimit and setpriv (about 5 ms),
# and the Docker backend binds it into containers of any image. package.nix names it in the
# wrapper's CUTOR_SPOOL_LAUNCHER.
{
  pkgsStatic,
  src,
  version,
}:
pkgsStatic.runCommandCC "cutor-spool-launcher-${version}"
  {
    source = "${src}/cutor_spool/runner/launcher.c";
    meta.mainProgram = "cutor-spool-launcher";
  }
  ''
    mkdir -p $out/bin
    $CC -static -Os -s -Wall -o $out/bin/cutor-spool-launcher "$source"
  ''
