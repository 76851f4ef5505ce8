{
  description = "The stand-in nixpkgs channel of cutor-spool's tests, as a flake without inputs";
  outputs =
    { self }:
    {
      legacyPackages = builtins.listToAttrs (
        map (system: {
          name = system;
          value = import ./. { inherit system; };
        }) [ "x86_64-linux" "aarch64-linux" ]
      );
    };
}
