# cutor-spool on Nomad: executors and builders as a `service` job, on the clients that mount the
# spool. docs/deploy.md ("Nomad") says what was checked here: this file is parsed and its command
# lines are checked against the CLI by tests/test_deploy_engines.py; `nomad job validate` was not
# run (no Nomad binary on the test machine).
#
#   nomad job run deploy/nomad/cutor-spool.nomad.hcl
#
# The spool is one CSI volume that every worker mounts read-write at once (NFS, for example with
# the csi-driver-nfs plugin, or CephFS), registered once with the capability this job asks for:
#
#   capability {
#     access_mode     = "multi-node-multi-writer"
#     attachment_mode = "file-system"
#   }
#
# Instead, every client that may run a worker can mount the share itself (lookupcache=positive)
# and publish it as a host volume (`client { host_volume "cutor-spool" { path = "/srv/spool" } }`);
# then set `type = "host"` and leave out access_mode and attachment_mode below (Nomad reads them
# for CSI and dynamic host volumes).

variable "spool" {
  type        = string
  default     = "/srv/spool"
  description = "Where the spool volume is mounted inside each task."
}

job "cutor-spool" {
  type = "service"

  group "executor" {
    count = 1

    volume "spool" {
      type            = "csi"
      source          = "cutor-spool"
      read_only       = false
      access_mode     = "multi-node-multi-writer"
      attachment_mode = "file-system"
    }

    # The Nomad Autoscaler (its Prometheus APM plugin, pointed at the Prometheus that scrapes
    # SPOOL/status/metrics.prom) reads the queue depth; the target-value strategy keeps about 4
    # waiting entries per executor (--concurrency 2: 2 running, 2 waiting).
    scaling {
      enabled = true
      min     = 1
      max     = 20

      policy {
        cooldown            = "5m"
        evaluation_interval = "15s"

        check "queue_depth" {
          source = "prometheus"
          query  = "sum(cutor_spool_queue_depth{queue=~\"submissions|invocations\"})"

          strategy "target-value" {
            target = 4
          }
        }
      }
    }

    task "executor" {
      # raw_exec, not docker: the executor is the host's root, as under systemd (its jobs run as
      # unprivileged per-slot uids, never as root). It makes bubblewrap sandboxes (namespaces and
      # mounts: CAP_SYS_ADMIN, and a /proc no runtime has masked) and a cgroup per stage under its
      # own (a writable cgroup v2 hierarchy), which a Docker task would need `privileged = true`
      # for. raw_exec must be enabled on these clients (plugin "raw_exec" { config { enabled = true } }).
      driver = "raw_exec"
      user   = "root"

      config {
        command = "cutor-spool"
        args    = ["--spool", "${var.spool}", "executor", "--concurrency", "2", "--grace", "30", "--state-dir", "/run/cutor-spool"]
      }

      volume_mount {
        volume      = "spool"
        destination = "${var.spool}"
      }

      # SIGTERM: the executor stops claiming and lets its work finish for --grace (30) seconds,
      # then hands it back; SIGKILL after kill_timeout loses nothing (the leases expire).
      # kill_timeout is the grace plus time to hand back; change both together.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      service {
        name     = "cutor-spool-executor"
        # Script checks run through Consul's provider (Nomad's own runs http and tcp checks only).
        provider = "consul"

        # The heartbeat file: exit 1 when this client's executor has no fresh heartbeat; three
        # failures in a row restart the task.
        check {
          name     = "heartbeat"
          type     = "script"
          command  = "cutor-spool"
          args     = ["--spool", "${var.spool}", "workers", "--check", "--kind", "executor"]
          interval = "30s"
          timeout  = "20s"

          check_restart {
            limit = 3
            grace = "5m"
          }
        }
      }

      resources {
        cpu    = 2000
        memory = 4096
      }
    }
  }

  # The builder group repeats the executor's shape (volume, task, check) with its own values, on
  # purpose: a `dynamic "group"` over a local map would share it, but what Nomad makes of that
  # could not be checked here (no `nomad job validate`; python-hcl2 parses without evaluating, so
  # tests/test_deploy_engines.py would need an HCL evaluator of its own). Keep the two in step.
  group "builder" {
    count = 1

    volume "spool" {
      type            = "csi"
      source          = "cutor-spool"
      read_only       = false
      access_mode     = "multi-node-multi-writer"
      attachment_mode = "file-system"
    }

    scaling {
      enabled = true
      min     = 1
      max     = 4

      policy {
        cooldown            = "10m"
        evaluation_interval = "30s"

        check "queue_depth" {
          source = "prometheus"
          query  = "sum(cutor_spool_queue_depth{queue=\"builds\"})"

          strategy "target-value" {
            target = 2
          }
        }
      }
    }

    task "builder" {
      # raw_exec as root, as the executor: Nix's build sandbox makes namespaces and mounts and
      # runs builds as Nix's build users.
      driver = "raw_exec"
      user   = "root"

      config {
        command = "cutor-spool"
        args    = ["--spool", "${var.spool}", "builder", "--concurrency", "1", "--grace", "30", "--state-dir", "/run/cutor-spool"]
      }

      volume_mount {
        volume      = "spool"
        destination = "${var.spool}"
      }

      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      service {
        name     = "cutor-spool-builder"
        provider = "consul"

        check {
          name     = "heartbeat"
          type     = "script"
          command  = "cutor-spool"
          args     = ["--spool", "${var.spool}", "workers", "--check", "--kind", "builder"]
          interval = "30s"
          timeout  = "20s"

          check_restart {
            limit = 3
            grace = "5m"
          }
        }
      }

      resources {
        cpu    = 1000
        memory = 2048
      }
    }
  }
}
