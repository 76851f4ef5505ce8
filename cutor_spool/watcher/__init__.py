"""Finding and claiming work: the spool protocol (claim, lease, commit, reap), readiness, the
filesystem clock, the watchers (inotify, rescans, polling) that wake workers up, and the generic
worker that every queue's worker subclasses (worker.py: the loop and what happens to a claim;
endings.py: entries finished without their work; maintenance.py: heartbeat, leases, reaper)."""
