"""The errors of deployments' foundation: the content store, CIDs and keys.

They are `CutorError`s that name what a caller did or what it found, so that the CLI can give each
its own exit code and a later executor can decide which are the request's fault (`invalid`) and
which the system's (`error`):

    DeploymentError             anything below
      InvalidCid                the text is not a CID of this store
      UnknownCid                no blob with this CID in the store
      BlobMismatch              a stored blob's bytes no longer match its CID: it is never served
      KeyFileError              a key file is missing, malformed, too open, or in the wrong place
      BadSignature              a signature does not verify with the public key it names
      SealError                 a sealed value does not open with this private key
      BadManifest               deployment.yaml is missing or invalid (every problem listed)
      BundleError               a directory cannot be packed, or a zip is refused by unpack
      BadSpec                   a spec blob is not a valid spec.json (or its manifest is invalid)
      TermsNotAccepted          no acceptance of the terms, or one that does not verify, or terms
                                that are not in the store
"""

from __future__ import annotations

from cutor_spool.errors import CutorError


class DeploymentError(CutorError):
    """Base of the errors of deployments: the store, keys, bundles, specs."""


class InvalidCid(DeploymentError):
    """The text is not a CIDv1 of a dag-pb sha2-256 node in base32."""


class UnknownCid(DeploymentError):
    """The store has no blob with this CID."""


class BlobMismatch(DeploymentError):
    """The blob stored under a CID has other bytes now (disk corruption or tampering)."""


class KeyFileError(DeploymentError):
    """A key file cannot be used: missing, malformed, readable by others, or in the spool."""


class BadSignature(DeploymentError):
    """A signature does not verify."""


class SealError(DeploymentError):
    """A sealed value does not open: the wrong private key, or the value was changed."""


class BadManifest(DeploymentError):
    """deployment.yaml is missing, not YAML, or not a valid manifest; `problems` lists every
    `(where, message)`."""

    def __init__(self, problems: list[tuple[str, str]], name: str = "deployment.yaml") -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {where}: {message}" for where, message in self.problems)
        super().__init__(f"{name} is not valid:\n{lines}")


class BundleError(DeploymentError):
    """A directory cannot be packed, or a zip cannot be unpacked; `problems` lists every reason
    found (unpack stops at the first)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        if len(problems) == 1:
            super().__init__(problems[0])
        else:
            super().__init__("\n".join(["the bundle cannot be made:", *(f"  - {p}" for p in problems)]))


class BadSpec(DeploymentError):
    """A blob named as a deployment is not a valid spec.json."""


class TermsNotAccepted(DeploymentError):
    """The owner did not accept the operator's terms: no acceptance, a signature over other terms,
    or terms the store does not hold."""
