# A NixOS VM with the module: the target starts two executors and a builder, a submission is
# dropped with the CLI and finishes, and the workers regenerate the status page. Needs KVM and
# the real nixpkgs (`nix build .#checks.x86_64-linux.nixos`).
{ self, pkgs }:
pkgs.testers.runNixOSTest {
  name = "cutor-spool";
  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      virtualisation.memorySize = 2048;
      services.cutor-spool = {
        enable = true;
        executors = 2;
        builders = 1;
        settings = {
          version = 1;
          nix.nixpkgs = "${pkgs.path}";
          status_page.interval = "1s";
        };
      };
    };
  testScript = ''
    machine.wait_for_unit("cutor-spool.target")
    for unit in ["cutor-spool-executor@1", "cutor-spool-executor@2", "cutor-spool-builder@1"]:
        machine.wait_for_unit(unit + ".service")
    machine.succeed("mkdir -p /tmp/hello && printf 'run: echo hello from the vm\\n' > /tmp/hello/submission.yaml")
    machine.succeed("cutor-spool --spool /var/spool/cutor-spool submit /tmp/hello --id hello --wait --timeout 120")
    machine.succeed("grep -q 'hello from the vm' /var/spool/cutor-spool/done/hello/result/run.json")
    machine.wait_until_succeeds("grep -q hello /var/spool/cutor-spool/status/status.json")
    machine.succeed("systemctl stop cutor-spool.target")
    machine.fail("systemctl is-active cutor-spool-executor@1.service")
  '';
}
