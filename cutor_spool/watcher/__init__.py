"""Finding and claiming work: the spool protocol (claim, lease, commit, reap), readiness, the
filesystem clock, and the watchers (inotify, rescans, polling) that wake workers up."""
