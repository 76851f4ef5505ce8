"""The commented spool.yaml that `cutor-spool init` writes (layout.Spool.init).

Every key is optional and its default lives in config.py's models; this text says the same values
for people to read and change (tests/test_ledger.py reads it back through SpoolConfig). A shared
spool (`init --shared`) gets its `shared:` section appended.
"""

from __future__ import annotations

import json

from cutor_spool.config import SharedConfig

__all__ = ["DEFAULT_CONFIG_TEXT", "shared_config_text"]

DEFAULT_CONFIG_TEXT = """\
# cutor-spool configuration, shared by every worker and client of this spool.
# Durations: 2s, 500ms, 1.5m. Sizes: 256MiB, 1GiB. Every key is optional.
version: 1
backend: bubblewrap          # or docker
settle: 2s                   # quiet time before an entry without .ready is claimed
heartbeat: 2s                # how often a worker touches its lease
lease_timeout: 30s           # a lease older than this (filesystem clock) is reaped; keep it well
                             # above the NFS attribute-cache time
max_attempts: 3              # claims the system failed (or whose lease expired while its worker
                             # lived) before a submission ends in `error`
max_lost_leases: 10          # claims whose worker died holding them (SIGKILL, crash, reboot) before
                             # it ends in `error`: a worker's death is rarely its job's fault
rescan: 5s                   # full rescan even with inotify (it can miss events)
poll_interval: 500ms         # scan period with --poll (automatic on NFS)
allow_network: false         # may submissions ask for `network: true`?
max_priority: high           # the highest lane a submission may ask for (high, normal, low, -100..100)
notify:                      # callbacks when a submission ends (README: "Callbacks")
  urls: false                # may a submission name its own `notify:` URL? (requests from this host)
  allowed_hosts: []          # then only to these hosts (or *.domain patterns); empty: any
  command: null              # operators' hook, run with status.json on stdin for every ending
retention:                   # workers remove finished submissions themselves (or: cutor-spool prune)
  older_than: null           # e.g. 30d; null keeps everything
  keep_failed: false         # keep those that did not end ok/accepted
limits:
  default:   {cpu_time: 5s, wall_time: 10s, memory: 512MiB, processes: 64,
              file_size: 64MiB, open_files: 256, stack: 64MiB, output: 1MiB}
              # address_space: RLIMIT_AS, 0 (off) unless set; docs/judge.md (not for JVM, Go)
  maximum:   {cpu_time: 600s, wall_time: 1800s, memory: 8GiB, processes: 512,
              file_size: 1GiB, open_files: 4096, stack: 1GiB, output: 64MiB}
  stages:
    compile: {cpu_time: 30s, wall_time: 60s, memory: 1GiB}
    dependencies: {cpu_time: 600s, wall_time: 900s, memory: 4GiB, output: 4MiB}
    checker: {cpu_time: 10s, wall_time: 20s}
sandbox:
  uid_base: 61000            # slot n runs as uid uid_base + n
  slots: 64
  work_size: 512MiB          # the submission's /work (a tmpfs; counts towards memory)
  tmp_size: 64MiB            # its /tmp
  generated_cache: 1GiB      # generated test inputs kept per host (the least recently used go first)
  pinning:                   # each slot's stages on a CPU of their own (README: "CPU pinning")
    enabled: false           # off: a pinned stage gets one CPU, however many threads it runs
    cpus: null               # the CPUs to hand out, as "0-3" or [0, 1]; null: all the executor may use
  etc: [java-*, fpc.cfg, fpc-*.cfg]  # host /etc paths stages see besides the base (docs/security.md)
  seccomp:                   # the system calls no stage may make (README: "System calls")
    action: errno            # a denied call fails with EPERM; `kill`: the stage ends security_violation
    allow: []                # groups or calls of the policy to allow after all (e.g. ptrace)
    deny: []                 # more system calls to deny
docker:
  image: cutor-spool-sandbox:latest
nix:
  nixpkgs: null              # a path or a pinned flake reference (github:NixOS/nixpkgs/<rev>)
  build_timeout: 600s        # a build's wall time, memory and log (builds are submitter code)
  build_memory: 4GiB
  build_log: 4MiB
  binary_cache: true         # export environments to builds/cache, signed, for other stores
deployments:
  invoke_wall_time: 15s      # an invocation's wall clock unless its deployment asks for another
  max_invoke_wall_time: 60s  # the most a deployment may ask for
  max_body: 10MiB            # the largest request body (`invoke --data`)
  server_key: null           # the server's private key file on the executors' hosts (or --server-key)
  fee: 0                     # micro-credits per request (1 credit = 1000000; docs/ledger.md)
  rate: 0                    # micro-credits per second of wall time; 0 and 0: free
  hold_margin: 30s           # a hold outlives the wall-time limit by this much unless renewed
  signature_max_age: 5m      # a payer's signature older than this when the request is run: refused
  idempotency_ttl: 24h       # an Idempotency-Key is forgotten this long after it was made
languages: {}                # language presets over the shipped ones (`cutor-spool languages` lists them):
  # cpp23: {base: cpp20, name: C++23 (GCC), compile: g++ -std=c++23 -O2 -o main main.cpp}
  # java17: {base: java17, limits: {run: {memory: 1GiB}}}   # change only what is given
  # cpp: {alias: cpp20}      # what `language: cpp` means
  # pypy3: null              # remove one
"""


def shared_config_text(shared: SharedConfig) -> str:
    return (
        "shared:                      # users who do not trust each other (docs/shared-spool.md)\n"
        f"  submitters: {json.dumps(shared.submitters)}  # may drop into incoming/ (drop, never list)\n"
        f"  operators: {json.dumps(shared.operators)}  # may read every result and the status page\n"
    )
