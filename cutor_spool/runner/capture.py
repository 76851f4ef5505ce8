"""Reading a stage's stdout and stderr with a byte cap per stream."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Capture:
    """Keeps at most `cap` bytes of each stream. With `started_marker`, the first bytes of stdout
    must be that marker (written inside the sandbox just before the job is exec'd, so the job
    cannot precede it): it is stripped, and its absence means the sandbox never got as far as the
    job (its set-up failed), which is the system's failure, not the submission's."""

    cap: int
    started_marker: bytes | None = None
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    interleaved: bytearray = field(default_factory=bytearray)
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    started: bool = False
    _pending: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.started = self.started_marker is None

    def feed(self, stream: str, data: bytes) -> bool:
        """False once a stream went past its cap."""
        if stream == "stdout" and not self.started:
            assert self.started_marker is not None
            self._pending += data
            marker = self.started_marker
            if len(self._pending) < len(marker) and marker.startswith(bytes(self._pending)):
                return True  # the rest of the marker is on its way
            if self._pending.startswith(marker):
                self.started = True
                data = bytes(self._pending[len(marker) :])
                self._pending.clear()
                if not data:
                    return True
            else:  # not our marker: whatever wrote this was not the stage wrapper
                data = bytes(self._pending)
                self._pending.clear()
        buf = self.stdout if stream == "stdout" else self.stderr
        room = self.cap - len(buf)
        kept = data[: max(room, 0)]
        buf += kept
        self.interleaved += kept
        if len(data) > room:
            if stream == "stdout":
                self.stdout_truncated = True
            else:
                self.stderr_truncated = True
            return False
        return True

    @property
    def over(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated
