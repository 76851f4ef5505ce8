{
  description = "cutor-spool: a filesystem-spool batch runner for untrusted code, with dependencies from Nix";

  # nixpkgs is the only input, pinned in flake.lock; pin another with `--override-input nixpkgs …`.
  # Offline, tests/test_flake.py overrides it with a shim (the tests' channel plus the few nixpkgs
  # functions the flake calls): the bare channel is not a nixpkgs and cannot stand in (docs/deploy.md).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs =
    { self, nixpkgs }:
    let
      # Linux only: the sandbox is bubblewrap plus cgroups.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      # builtins only (no nixpkgs.lib), so that the outputs' shape evaluates with any nixpkgs.
      forAllSystems =
        f:
        builtins.listToAttrs (
          map (system: {
            name = system;
            value = f system;
          }) systems
        );
      pkgsFor = system: nixpkgs.legacyPackages.${system};
      # One version, pyproject.toml's.
      version = (builtins.fromTOML (builtins.readFile ./pyproject.toml)).project.version;
      app = program: {
        type = "app";
        inherit program;
      };
    in
    {
      packages = forAllSystems (
        system:
        let
          pkgs = pkgsFor system;
        in
        {
          cutor-spool = pkgs.callPackage ./nix/package.nix {
            inherit version;
            src = self;
          };
          default = self.packages.${system}.cutor-spool;
        }
      );

      # `nix run .#` is the CLI; `nix run .#executor -- --concurrency 4` and `nix run .#builder`
      # start the workers (as root; the spool from --spool or CUTOR_SPOOL).
      apps = forAllSystems (
        system:
        let
          pkgs = pkgsFor system;
          cli = "${self.packages.${system}.default}/bin/cutor-spool";
          worker =
            command:
            app "${pkgs.writeShellScript "cutor-spool-${command}" ''exec ${cli} ${command} "$@"''}";
        in
        {
          default = app cli;
          cutor-spool = app cli;
          executor = worker "executor";
          builder = worker "builder";
          status-page = worker "status-page";
        }
      );

      devShells = forAllSystems (
        system:
        let
          pkgs = pkgsFor system;
          # The Python packages here are the pinned nixpkgs' versions (flake.lock), not those of
          # requirements/*.txt: Nix builds from its own source tree, with its own hashes. The two
          # meet in pyproject.toml's ranges, which both satisfy; the lock is what scripts/test.sh
          # and CI run, and scripts/drift.sh checks the newest versions those ranges allow.
          python = pkgs.python3.withPackages (
            ps:
            import ./nix/python-deps.nix ps
            ++ [
              ps.pytest
              ps.pytest-timeout
              ps.hypothesis
              ps.mypy
              ps.types-pyyaml
              ps.prometheus-client
              ps.import-linter
              ps.radon
            ]
          );
        in
        {
          default = pkgs.mkShell {
            packages = [
              python
              pkgs.ruff
              pkgs.bubblewrap
              pkgs.tini
              pkgs.util-linux
              pkgs.nix
              pkgs.chromium
            ];
            shellHook = ''
              export PYTHONPATH="$PWD''${PYTHONPATH:+:$PYTHONPATH}"
            '';
          };
        }
      );

      # NixOS: services.cutor-spool = { enable = true; spool = "/srv/spool"; executors = 4; builders = 1; };
      nixosModules.cutor-spool = import ./nix/module.nix self;
      nixosModules.default = self.nixosModules.cutor-spool;

      overlays.default = final: prev: {
        cutor-spool = final.callPackage ./nix/package.nix {
          inherit version;
          src = self;
        };
      };

      checks = forAllSystems (
        system:
        let
          pkgs = pkgsFor system;
          package = self.packages.${system}.default;
        in
        {
          inherit package;
          # What runs without root, bubblewrap or cgroups (the Nix build sandbox has none): the CLI,
          # a spool, validation of an example, the status page, the systemd units.
          cli = pkgs.runCommand "cutor-spool-cli-check" { nativeBuildInputs = [ package pkgs.systemd ]; } ''
            export HOME=$TMPDIR
            cutor-spool --version
            cutor-spool --spool spool init
            cutor-spool validate ${self}/examples/judge-sum-full
            cutor-spool --spool spool status-page
            test -s spool/status/index.html -a -s spool/status/metrics.prom -a -s spool/status/static/uPlot.iife.min.js
            mkdir units
            cutor-spool systemd --output units --env-file $TMPDIR/cutor-spool.env
            ln -s cutor-spool-executor@.service units/cutor-spool-executor@1.service
            ln -s cutor-spool-builder@.service units/cutor-spool-builder@1.service
            systemd-analyze verify --man=no units/cutor-spool-executor@1.service units/cutor-spool-builder@1.service
            touch $out
          '';
        }
        // (
          if system == "x86_64-linux" then
            {
              # A NixOS VM with the module: two executors and a builder start, and a job runs.
              nixos = import ./nix/vm-test.nix { inherit self pkgs; };
            }
          else
            { }
        )
      );

      formatter = forAllSystems (system: (pkgsFor system).nixfmt-rfc-style);
    };
}
