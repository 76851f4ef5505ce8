"""The Nix expression that turns a request into an environment (written next to each build).

Everything the request says reaches it as a string argument (`--argstr`): attribute paths are
split and looked up with `builtins.getAttr`, never spliced into Nix code as text, so a name can
only ever select an attribute. A submission's Nix file is imported under `restrict-eval` and
called with `pkgs` (and `lib`, `system`) if it is a function; it may give a derivation (usually
`pkgs.mkShell { ... }`) or a list of packages.
"""

from __future__ import annotations

DRIVER_NIX = r"""
{ nixpkgsKind, flake ? "", system, attrs ? "[]", nixFile ? "", nixName ? "" }:
let
  importArgs = { inherit system; config = { }; overlays = [ ]; };
  pkgs =
    if nixpkgsKind == "flake" then import (builtins.getFlake flake).outPath importArgs
    else import <nixpkgs> importArgs;
  isPackage = v: builtins.isAttrs v && (v.type or "") == "derivation";
  lookup = path:
    let
      parts = builtins.filter builtins.isString (builtins.split "[.]" path);
      step = set: name:
        if builtins.isAttrs set && builtins.hasAttr name set then builtins.getAttr name set
        else throw "cutor-spool: nixpkgs has no attribute '${path}'";
      found = builtins.foldl' step pkgs parts;
    in
    if isPackage found then found else throw "cutor-spool: '${path}' is not a package (not a derivation)";
  named = builtins.fromJSON attrs;
  fromFile =
    let
      f = import nixFile;
      given = { inherit pkgs system; lib = pkgs.lib or { }; };
      v = if builtins.isFunction f then f (builtins.intersectAttrs (builtins.functionArgs f) given) else f;
    in
    if builtins.isList v then pkgs.mkShell { name = "cutor-env"; packages = v; }
    else if builtins.isAttrs v && v ? drvPath then v
    else throw "cutor-spool: ${nixName} must give a derivation (such as pkgs.mkShell { ... }) or a list of packages";
  shell = if nixFile != "" then fromFile else pkgs.mkShell { name = "cutor-env"; packages = map lookup named; };
  describe = attr: p: {
    inherit attr;
    name = p.name or "";
    pname = p.pname or "";
    version = p.version or "";
    path = p.outPath;
  };
  fileInputs = builtins.filter isPackage
    ((shell.nativeBuildInputs or [ ]) ++ (shell.buildInputs or [ ]) ++ (shell.propagatedBuildInputs or [ ]));
in
{
  info = {
    drvPath = shell.drvPath;
    packages = if nixFile != "" then map (describe null) fileInputs else map (a: describe a (lookup a)) named;
  };
}
"""
