"""What determines an environment, and its key.

The key is a SHA-256 over everything that decides what the build produces: the attribute list (in
its order: earlier packages come first on PATH) or the content of the submission's Nix file, the
identity of the pinned nixpkgs (a NAR hash, not a path: two hosts with the same channel at
different places share keys), and the system. Limits of the build are spool-wide and not part of
the key. The request travels as `request.json` (and the Nix file as `cutor.nix`) inside the build
entry; the builder recomputes the key and refuses a request whose key is not its entry's name.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from cutor_spool.submission import AttrPath

KEY_FORMAT = 1
REQUEST_NAME = "request.json"
NIX_FILE_NAME = "cutor.nix"
MAX_NIX_FILE = 1 << 20  # a Nix file that describes an environment is a few lines


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NixpkgsPin(_Strict):
    """Which nixpkgs: `ref` is where it is (a path, or a locked flake URL), `identity` what it is."""

    kind: Literal["path", "flake"]
    ref: str
    identity: str


class EnvRequest(_Strict):
    format: Literal[1] = 1
    nixpkgs: NixpkgsPin
    system: Annotated[str, Field(pattern=r"^[a-z0-9_]+-[a-z0-9_]+$")]
    attrs: tuple[AttrPath, ...] = Field(default=(), max_length=1000)
    nix_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    nix_name: str | None = Field(default=None, max_length=4096, description="the file's name in the submission")

    def key(self) -> str:
        identity = {
            "format": self.format,
            "nixpkgs": self.nixpkgs.identity,
            "system": self.system,
            "attrs": list(self.attrs),
            "nix": self.nix_sha256,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def describe(self) -> str:
        return f"nix file {self.nix_name}" if self.nix_sha256 else " ".join(self.attrs)

    def summary(self) -> dict[str, object]:
        if self.nix_sha256:
            return {"nix": self.nix_name, "sha256": self.nix_sha256}
        return {"attrs": list(self.attrs)}


def for_attrs(attrs: list[str], pin: NixpkgsPin, system: str) -> EnvRequest:
    return EnvRequest(nixpkgs=pin, system=system, attrs=tuple(attrs))


def for_nix_file(name: str, content: bytes, pin: NixpkgsPin, system: str) -> EnvRequest:
    return EnvRequest(nixpkgs=pin, system=system, nix_sha256=hashlib.sha256(content).hexdigest(), nix_name=name)


def short(key: str) -> str:
    return key[:12]
