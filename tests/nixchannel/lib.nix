# The few helpers of nixpkgs' lib that environments commonly use.
rec {
  makeBinPath = paths: concatStringsSep ":" (map (p: "${p}/bin") paths);
  concatStringsSep = builtins.concatStringsSep;
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  attrByPath =
    path: default: set:
    if path == [ ] then
      set
    else if builtins.isAttrs set && builtins.hasAttr (builtins.head path) set then
      attrByPath (builtins.tail path) default (builtins.getAttr (builtins.head path) set)
    else
      default;
}
