{ system }:
let
  # Builders are the host's bash: with Nix's sandbox on, the spool's `nix.sandbox_paths` must
  # expose /bin, /usr and the library directories to builds (see tests/nixchannel/README.md).
  bash = "/bin/bash";

  stdenvDir = builtins.path {
    path = ./stdenv;
    name = "stand-in-stdenv";
  };

  initialPath = [
    pkgs.coreutils
    pkgs.findutils
    pkgs.diffutils
    pkgs.gnugrep
    pkgs.gnused
    pkgs.gawk
    pkgs.gnutar
    pkgs.gzip
    pkgs.bash
  ];

  mkDerivation =
    {
      passthru ? { },
      meta ? { },
      ...
    }@attrs:
    let
      clean = builtins.removeAttrs attrs [
        "passthru"
        "meta"
      ];
      drv = derivation (
        {
          inherit system;
          builder = bash;
          args = [
            "-e"
            "${stdenvDir}/default-builder.sh"
          ];
          stdenv = stdenvDir;
          inherit initialPath;
        }
        // clean
      );
    in
    drv // passthru // { inherit meta; };

  hostTool =
    {
      pname,
      version,
      programs ? [ pname ],
      setupHook ? "",
      passthru ? { },
    }:
    let
      drv = derivation {
        name = "${pname}-${version}";
        inherit
          pname
          version
          programs
          setupHook
          system
          ;
        builder = bash;
        args = [ ./builders/host-tool.sh ];
      };
    in
    drv // passthru // { meta.description = "the host's ${pname}, linked into the store"; };

  coreutilsPrograms = [
    "[" "b2sum" "base32" "base64" "basename" "basenc" "cat" "chgrp" "chmod" "chown" "cksum"
    "comm" "cp" "csplit" "cut" "date" "dd" "df" "dir" "dircolors" "dirname" "du" "echo" "env"
    "expand" "expr" "factor" "false" "fmt" "fold" "groups" "head" "hostid" "id" "install" "join"
    "link" "ln" "logname" "ls" "md5sum" "mkdir" "mkfifo" "mknod" "mktemp" "mv" "nice" "nl" "nohup"
    "nproc" "numfmt" "od" "paste" "pathchk" "pinky" "pr" "printenv" "printf" "ptx" "pwd"
    "readlink" "realpath" "rm" "rmdir" "runcon" "seq" "sha1sum" "sha224sum" "sha256sum"
    "sha384sum" "sha512sum" "shred" "shuf" "sleep" "sort" "split" "stat" "stdbuf" "stty" "sum"
    "sync" "tac" "tail" "tee" "test" "timeout" "touch" "tr" "true" "truncate" "tsort" "tty"
    "uname" "unexpand" "uniq" "unlink" "users" "vdir" "wc" "who" "whoami" "yes"
  ];

  sitePackages = "lib/python3/site-packages";

  pythonPackage =
    {
      pname,
      version,
      src,
    }:
    mkDerivation {
      name = "python3-${pname}-${version}";
      inherit pname version src;
      buildCommand = ''
        mkdir -p "$out/${sitePackages}"
        cp -r "$src"/. "$out/${sitePackages}/"
      '';
    };

  pkgs = {
    inherit system pkgs;
    lib = import ./lib.nix;
    stdenv = {
      inherit mkDerivation system initialPath;
      shell = bash;
      cc = pkgs.gcc;
      setup = "${stdenvDir}/setup";
      outPath = stdenvDir;
      isLinux = true;
      hostPlatform.system = system;
      buildPlatform.system = system;
    };
    stdenvNoCC = pkgs.stdenv;

    # What nix-shell -p evaluates: (pkgs.runCommandCC or pkgs.runCommand) name env command.
    runCommand =
      name: env: buildCommand:
      mkDerivation ({ inherit name buildCommand; } // env);
    runCommandCC = pkgs.runCommand;
    runCommandNoCC = pkgs.runCommand;
    writeText =
      name: text:
      mkDerivation {
        inherit name text;
        passAsFile = [ "text" ];
        buildCommand = ''cp "$textPath" "$out"'';
      };

    # mkShell's builder must be a bash: `nix print-dev-env` replaces its arguments with Nix's
    # get-env.sh, which sources $stdenv/setup and dumps the resulting environment.
    mkShell =
      {
        name ? "nix-shell",
        packages ? [ ],
        nativeBuildInputs ? [ ],
        buildInputs ? [ ],
        inputsFrom ? [ ],
        shellHook ? "",
        ...
      }@attrs:
      let
        rest = builtins.removeAttrs attrs [
          "name"
          "packages"
          "nativeBuildInputs"
          "buildInputs"
          "inputsFrom"
          "shellHook"
        ];
        fromInputs = builtins.concatLists (
          map (d: (d.nativeBuildInputs or [ ]) ++ (d.buildInputs or [ ])) inputsFrom
        );
      in
      mkDerivation (
        {
          inherit name shellHook buildInputs;
          nativeBuildInputs = packages ++ nativeBuildInputs ++ fromInputs;
          phases = [ "nobuildPhase" ];
          buildCommand = ''
            echo "a mkShell environment is for nix-shell and print-dev-env; it is not built" >&2
            exit 1
          '';
        }
        // rest
      );

    buildEnv =
      {
        name,
        paths,
        pathsToLink ? [ "/" ],
        ...
      }:
      mkDerivation {
        inherit name paths;
        buildCommand = ''
          mkdir -p "$out"
          for p in $paths; do
            for sub in bin lib share include; do
              [ -d "$p/$sub" ] || continue
              mkdir -p "$out/$sub"
              for f in "$p/$sub"/*; do
                [ -e "$out/$sub/$(basename "$f")" ] || ln -s "$f" "$out/$sub/"
              done
            done
          done
        '';
      };

    bash = hostTool {
      pname = "bash";
      version = "5.2-host";
      programs = [
        "bash"
        "sh"
      ];
    };
    bashInteractive = pkgs.bash;
    coreutils = hostTool {
      pname = "coreutils";
      version = "9.1-host";
      programs = coreutilsPrograms;
    };
    findutils = hostTool {
      pname = "findutils";
      version = "4.9-host";
      programs = [
        "find"
        "xargs"
      ];
    };
    diffutils = hostTool {
      pname = "diffutils";
      version = "3.8-host";
      programs = [
        "diff"
        "cmp"
        "diff3"
        "sdiff"
      ];
    };
    gnugrep = hostTool {
      pname = "gnugrep";
      version = "3.8-host";
      programs = [
        "grep"
        "egrep"
        "fgrep"
      ];
    };
    gnused = hostTool {
      pname = "gnused";
      version = "4.9-host";
      programs = [ "sed" ];
    };
    gawk = hostTool {
      pname = "gawk";
      version = "host"; # Debian's default awk is mawk: the stand-in links whatever `awk` is
      programs = [ "awk" ];
    };
    gnutar = hostTool {
      pname = "gnutar";
      version = "1.34-host";
      programs = [ "tar" ];
    };
    gzip = hostTool {
      pname = "gzip";
      version = "1.12-host";
      programs = [
        "gzip"
        "gunzip"
        "zcat"
      ];
    };
    gnumake = hostTool {
      pname = "gnumake";
      version = "4.3-host";
      programs = [ "make" ];
    };
    # As in nixpkgs, `gcc` brings g++ too.
    gcc = hostTool {
      pname = "gcc";
      version = "12-host";
      programs = [
        "gcc"
        "g++"
        "cc"
        "c++"
        "cpp"
        "as"
        "ld"
      ];
    };
    python3 = hostTool {
      pname = "python3";
      version = "3.11-host";
      programs = [
        "python3"
        "pydoc3"
      ];
      # Like nixpkgs' python setup hook: every input's site-packages goes on PYTHONPATH.
      setupHook = ''
        addPythonPath() {
          if [ -d "$1/${sitePackages}" ]; then
            export PYTHONPATH="$1/${sitePackages}''${PYTHONPATH:+:$PYTHONPATH}"
          fi
        }
        addEnvHooks "$hostOffset" addPythonPath
      '';
      passthru = {
        inherit sitePackages;
        pkgs = pkgs.python3Packages;
      };
    };
    python3Packages = {
      # roman numerals, with the API of the `roman` package that real nixpkgs has, so that the
      # examples run against either.
      roman = pythonPackage {
        pname = "roman";
        version = "4.2-standin";
        src = ./pkgs/roman;
      };
    };

    # A package built from source with the host's compiler: a real (if tiny) build.
    hello = mkDerivation {
      pname = "hello";
      version = "2.12-standin";
      name = "hello-2.12-standin";
      src = ./pkgs/hello;
      nativeBuildInputs = [ pkgs.gcc ];
      buildCommand = ''
        mkdir -p "$out/bin"
        gcc -O2 -o "$out/bin/hello" "$src/hello.c"
      '';
    };
  };
in
pkgs
