# The cutor-spool Python application, with the programs it runs on its PATH: bubblewrap and tini
# (the sandbox), util-linux (prlimit, setpriv), Nix (the builder and the executors' environments),
# and its static stage launcher built ahead (launcher.nix) and named in CUTOR_SPOOL_LAUNCHER, so
# that no C compiler is needed where it runs.
{
  lib,
  pkgsStatic,
  python3Packages,
  bubblewrap,
  tini,
  util-linux,
  nix,
  version,
  src,
}:
let
  launcher = import ./launcher.nix { inherit pkgsStatic src version; };
in
python3Packages.buildPythonApplication {
  pname = "cutor-spool";
  inherit version src;
  pyproject = true;
  build-system = [ python3Packages.setuptools ];
  dependencies = import ./python-deps.nix python3Packages;
  # pyproject's lower bounds stay checked (nixpkgs' runtime-deps check): a pinned nixpkgs whose
  # packages are too old fails here, at build time, rather than in a worker (watchdog >= 7 is
  # needed for its InotifyFD, for example).
  makeWrapperArgs = [
    "--prefix"
    "PATH"
    ":"
    (lib.makeBinPath [
      bubblewrap
      tini
      util-linux
      nix
    ])
    # A user's own CUTOR_SPOOL_LAUNCHER still wins.
    "--set-default"
    "CUTOR_SPOOL_LAUNCHER"
    "${launcher}/bin/cutor-spool-launcher"
  ];
  passthru = { inherit launcher; };
  # The test suite needs root, bubblewrap, cgroups and a Nix store: none exist in a build sandbox.
  # The flake's `checks` run what can run there; the suite itself runs with scripts/test.sh.
  doCheck = false;
  pythonImportsCheck = [
    "cutor_spool"
    "cutor_spool.web_status"
  ];
  meta = {
    description = "A filesystem-spool batch runner for untrusted code, with dependencies from Nix";
    license = lib.licenses.mit;
    mainProgram = "cutor-spool";
    platforms = lib.platforms.linux;
  };
}
