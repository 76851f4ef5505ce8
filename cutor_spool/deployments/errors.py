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
"""

from __future__ import annotations

from cutor_spool.errors import CutorError


class DeploymentError(CutorError):
    """Base of the content store's and the keys' errors."""


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
