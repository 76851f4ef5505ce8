"""The error tree of cutor-spool.

Outcomes of a submission (invalid, compile error, time limit, ...) are *values* written to its
result, never exceptions. Exceptions are for failures of the system itself, and there are few:

    CutorError                      anything cutor-spool raises on purpose
      ConfigError                   spool.yaml or the command line is wrong: an operator must act
      SystemFailure                 the system failed a submission: retry it, then mark it `error`
        SandboxError                the sandbox could not be set up (bwrap, cgroups, Docker, slots)
        BuildError                  the Nix builder broke (not a failed build: that is an outcome)
        SpoolIOError                the spool could not be written (disk full, NFS gone)
      LeaseLost                     another worker owns the submission now: discard all work

`Shutdown` derives from BaseException so that `except Exception` in a stage cannot swallow it.
"SystemFailure -> retry then error" is decided in exactly one place, for every queue:
`watcher.worker.QueueWorker._retry`, called by `_process`. A worker's only say is `host_fault`:
the executor hands a sandbox failure that a probe shows to be the host's back uncounted, and
pauses claiming.

Any other exception in a worker is a programming error, not a failure of the system: it is counted
in the worker's heartbeat (`unexpected_errors`) and in metrics.prom. In production the entry is
then retried like a system failure, so that a bug never takes a worker down; with
`CUTOR_SPOOL_STRICT=1` (the test suite sets it) the worker stops and re-raises it instead.
"""

from __future__ import annotations


class CutorError(Exception):
    """Base of every error cutor-spool raises on purpose."""


class ConfigError(CutorError):
    """The spool's configuration or the command line is wrong."""


class SystemFailure(CutorError):
    """The system (not the submission) failed: the submission is handed back and retried."""


class SandboxError(SystemFailure):
    """The sandbox could not be set up or torn down."""


class BuildError(SystemFailure):
    """The builder or Nix itself failed (as opposed to a dependency that does not build)."""


class SpoolIOError(SystemFailure):
    """Writing into the spool failed (disk full, permissions, NFS trouble)."""


class LeaseLost(CutorError):
    """The claim's path is gone: the lease expired and another worker may own the submission."""


class CancelRequested(CutorError):
    """Someone allowed to (its submitter, root) asked with `cutor-spool cancel` that it stop."""


class Shutdown(BaseException):  # a signal, not an error: deliberately not *Error
    """The worker was asked to stop; unwinds through `except Exception`."""
