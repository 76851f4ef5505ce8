#!/usr/bin/env bash
# Starts Docker's engine if it is not running (machines here have no init system to do it).
#
# A dockerd killed without its shutdown (a session that ends, a SIGKILL) leaves its pid file and
# its containerd's behind, sometimes with that containerd still dying: the next dockerd then refuses
# to start ("pid file found") or waits on the old containerd's socket until it times out. So an
# engine that does not answer is stopped for good, its stale pid files removed, and started again.
set -euo pipefail
LOG=/var/log/cutor-dockerd.log

ready() { docker info >/dev/null 2>&1; }

wait_ready() { # seconds
  local i
  for i in $(seq 1 $(($1 * 2))); do
    if ready; then return 0; fi
    sleep 0.5
  done
  return 1
}

engine_pids() { # live dockerd and the containerd that dockerd started (not a host's own containerd)
  ps -eo pid=,stat=,args= | awk '$2 !~ /^Z/ && ($3 == "dockerd" || ($3 == "containerd" && $5 == "/var/run/docker/containerd/containerd.toml")) { print $1 }'
}

stop_leftovers() {
  local pids i
  pids=$(engine_pids)
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 1 20); do
      pids=$(engine_pids)
      [ -z "$pids" ] && break
      sleep 0.5
    done
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
    sleep 0.5
  fi
  rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
}

if ready; then exit 0; fi
# A dockerd that is still starting (another caller's) is given its time before anything is stopped.
if [ -n "$(engine_pids)" ] && wait_ready 20; then exit 0; fi

mkdir -p /var/log
for attempt in 1 2 3; do
  stop_leftovers
  nohup dockerd --log-level=warn >"$LOG" 2>&1 &
  if wait_ready 30; then exit 0; fi
  echo "dockerd did not start (attempt $attempt); the end of $LOG:" >&2
  tail -5 "$LOG" >&2 || true
done
echo "dockerd did not start after 3 attempts; see $LOG" >&2
exit 1
