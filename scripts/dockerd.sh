#!/usr/bin/env bash
# Starts Docker's engine if it is not running (machines here have no init system to do it).
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
mkdir -p /var/log
nohup dockerd --log-level=warn >/var/log/cutor-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 0.5
done
echo "dockerd did not start; see /var/log/cutor-dockerd.log" >&2
tail -20 /var/log/cutor-dockerd.log >&2 || true
exit 1
