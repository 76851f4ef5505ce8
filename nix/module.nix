# NixOS module: N executors and M builders on a spool, as instances of two systemd templates
# (cutor-spool-executor@.service, cutor-spool-builder@.service), grouped by cutor-spool.target.
# The unit settings mirror the templates that `cutor-spool systemd` prints (cutor_spool/systemd/),
# where each one's reason is written down.
#
#   services.cutor-spool = {
#     enable = true;
#     spool = "/srv/spool";          # local, or an NFS mount shared by many hosts
#     executors = 4;                 # cutor-spool-executor@1 ... @4
#     concurrency = 2;               # submissions per executor
#     builders = 1;
#     settings.nix.nixpkgs = "${pkgs.path}";
#   };
self:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.cutor-spool;
  inherit (lib)
    mkEnableOption
    mkOption
    mkIf
    types
    literalExpression
    ;
  settingsFormat = pkgs.formats.yaml { };
  exe = "${cfg.package}/bin/cutor-spool";
  spoolArg = lib.escapeShellArg cfg.spool;
  instances = kind: count: map (i: "cutor-spool-${kind}@${toString i}.service") (lib.range 1 count);

  worker = kind: execStart: {
    description = "cutor-spool ${kind} %i";
    after = [
      "network-online.target"
      "remote-fs.target"
      "nix-daemon.service"
      "cutor-spool-init.service"
    ];
    wants = [ "network-online.target" ];
    requires = [ "cutor-spool-init.service" ];
    partOf = [ "cutor-spool.target" ];
    startLimitIntervalSec = 300;
    startLimitBurst = 10;
    environment.CUTOR_SPOOL = cfg.spool;
    serviceConfig = {
      Type = "exec";
      User = "root";
      ExecStart = execStart;
      Delegate = true;
      OOMPolicy = "continue";
      OOMScoreAdjust = -900; # the OOM killer's last choice; stages start at 1000
      TasksMax = "infinity";
      LimitNOFILE = 65536;
      KillMode = "mixed";
      KillSignal = "SIGTERM";
      TimeoutStopSec = "${toString (cfg.grace + 15)}s";
      Restart = "on-failure";
      RestartSec = "5s";
      RestartPreventExitStatus = 78;
      SyslogIdentifier = "cutor-spool-${kind}-%i";
    };
  };
in
{
  options.services.cutor-spool = {
    enable = mkEnableOption "cutor-spool workers (executors and builders) on a spool";

    package = mkOption {
      type = types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      defaultText = literalExpression "cutor-spool.packages.\${system}.default";
      description = "The cutor-spool package the workers run.";
    };

    spool = mkOption {
      type = types.str;
      default = "/var/spool/cutor-spool";
      description = ''
        The spool directory. On many hosts, an NFS mount shared by all of them (mount it with
        lookupcache=positive); it is created, with a default spool.yaml, if missing.
      '';
    };

    executors = mkOption {
      type = types.ints.unsigned;
      default = 1;
      description = "Executor workers on this host: units cutor-spool-executor@1 to @N.";
    };

    concurrency = mkOption {
      type = types.ints.positive;
      default = 1;
      description = "Submissions each executor runs at once.";
    };

    builders = mkOption {
      type = types.ints.unsigned;
      default = 1;
      description = "Builder workers on this host (Nix environments): units cutor-spool-builder@1 to @N.";
    };

    grace = mkOption {
      type = types.ints.positive;
      default = 30;
      description = ''
        On stop, the seconds a worker lets its current work finish before handing it back to the
        queue. The units' stop timeout is this plus 15 seconds.
      '';
    };

    stateDir = mkOption {
      type = types.str;
      default = "/run/cutor-spool";
      description = "Per-host state (slot locks, work areas, build scratch space), on local disk.";
    };

    extraExecutorArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--backend"
        "docker"
      ];
      description = "Extra arguments of `cutor-spool executor`.";
    };

    extraBuilderArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra arguments of `cutor-spool builder`.";
    };

    settings = mkOption {
      type = types.nullOr settingsFormat.type;
      default = null;
      example = literalExpression ''
        {
          limits.default = { cpu_time = "2s"; memory = "256MiB"; };
          nix.nixpkgs = "''${pkgs.path}";
        }
      '';
      description = ''
        The spool's spool.yaml (shared by every host of the spool: set it on one host, or the same
        on all). null leaves the spool's own file alone. Workers refuse to start (exit status 78,
        not restarted) when it is invalid; the journal says why.
      '';
    };
  };

  config = mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];

    systemd.targets.cutor-spool = {
      description = "cutor-spool workers";
      wantedBy = [ "multi-user.target" ];
      wants = instances "executor" cfg.executors ++ instances "builder" cfg.builders;
    };

    systemd.services = {
      cutor-spool-init = {
        description = "cutor-spool: create the spool and write its spool.yaml";
        after = [ "remote-fs.target" ];
        partOf = [ "cutor-spool.target" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        script =
          ''
            ${exe} --spool ${spoolArg} init
          ''
          + lib.optionalString (cfg.settings != null) ''
            install -m 0644 ${settingsFormat.generate "spool.yaml" cfg.settings} ${spoolArg}/.spool.yaml.new
            mv ${spoolArg}/.spool.yaml.new ${spoolArg}/spool.yaml
          '';
      };

      "cutor-spool-executor@" = worker "executor" (
        lib.escapeShellArgs (
          [
            exe
            "--spool"
            cfg.spool
            "executor"
            "--host"
            "%H"
            "--concurrency"
            (toString cfg.concurrency)
            "--state-dir"
            cfg.stateDir
            "--grace"
            (toString cfg.grace)
          ]
          ++ cfg.extraExecutorArgs
        )
      );

      "cutor-spool-builder@" = worker "builder" (
        lib.escapeShellArgs (
          [
            exe
            "--spool"
            cfg.spool
            "builder"
            "--host"
            "%H"
            "--state-dir"
            cfg.stateDir
            "--grace"
            (toString cfg.grace)
          ]
          ++ cfg.extraBuilderArgs
        )
      );
    };
  };
}
