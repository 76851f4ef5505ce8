# A small nixpkgs-like channel that stands in for nixpkgs where the Nix cache cannot be reached
# (tests, offline machines). It takes nixpkgs' arguments and has the attributes that nix-shell,
# mkShell-based environments and cutor-spool's builder use; its packages wrap the host's own
# programs (python3, gcc, make, ...), so every build is a few symlinks and takes milliseconds.
{
  system ? builtins.currentSystem,
  config ? { },
  overlays ? [ ],
  ...
}:
import ./pkgs.nix { inherit system; }
