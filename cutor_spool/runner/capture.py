"""Keeping a child's stdout and stderr with a byte cap per stream (and their interleaving)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

SIDE_CAP = 64 * 1024  # of each side channel (bwrap's status JSON, the Docker engine's own errors)


@dataclass
class Capture:
    """Keeps at most `cap` bytes of stdout and `stderr_cap` (default: `cap`) of stderr, and both
    interleaved as they were read unless `interleave` is off. Other streams are side channels of
    the supervisor (`side`), kept up to SIDE_CAP and never part of the output.

    With `started_marker`, the first bytes of `marker_stream` must be that marker (written inside
    the sandbox just before the job is exec'd, so the job cannot precede it): it is stripped, and
    its absence means the sandbox never got as far as the job (its set-up failed), which is the
    system's failure, not the submission's. A stage whose stdout goes to another process (see
    `Sandbox.spawn`) has it on stderr."""

    cap: int
    stderr_cap: int | None = None
    started_marker: bytes | None = None
    marker_stream: str = "stdout"
    interleave: bool = True
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    interleaved: bytearray = field(default_factory=bytearray)
    side: dict[str, bytearray] = field(default_factory=dict)
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    started: bool = False
    live: Callable[[bytes], None] | None = None  # gets what is kept of stdout and stderr, as it comes
    _pending: bytearray = field(default_factory=bytearray)
    _looked: bool = False  # for the marker, at the first bytes of its stream

    def __post_init__(self) -> None:
        self.started = self._looked = self.started_marker is None

    def feed(self, stream: str, data: bytes) -> bool:
        """False once a stream went past its cap."""
        if stream not in ("stdout", "stderr"):
            side = self.side.setdefault(stream, bytearray())
            side += data[: max(SIDE_CAP - len(side), 0)]
            return True
        if stream == self.marker_stream and not self._looked:
            data = self._strip_marker(data)
            if not data:
                return True
        buf = self.stdout if stream == "stdout" else self.stderr
        cap = self.cap if stream == "stdout" or self.stderr_cap is None else self.stderr_cap
        room = cap - len(buf)
        kept = data[: max(room, 0)]
        buf += kept
        if self.interleave:
            self.interleaved += kept
        if self.live is not None and kept:
            self.live(kept)
        if len(data) <= room:
            return True
        if stream == "stdout":
            self.stdout_truncated = True
        else:
            self.stderr_truncated = True
        return False

    def _strip_marker(self, data: bytes) -> bytes:
        """What of `data` is the job's, once the marker (if it is there) is taken off."""
        assert self.started_marker is not None
        self._pending += data
        marker = self.started_marker
        if len(self._pending) < len(marker) and marker.startswith(bytes(self._pending)):
            return b""  # the rest of the marker is on its way
        rest = bytes(self._pending)
        self._pending.clear()
        self._looked = True
        if rest.startswith(marker):
            self.started = True
            return rest[len(marker) :]
        return rest  # not our marker: whatever wrote this was not the stage wrapper

    @property
    def over(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated
