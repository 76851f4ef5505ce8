"""Reading a stage's stdout and stderr with a byte cap per stream."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Capture:
    cap: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    interleaved: bytearray = field(default_factory=bytearray)
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    def feed(self, stream: str, data: bytes) -> bool:
        """Keeps at most `cap` bytes of each stream; False once a stream went past its cap."""
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
