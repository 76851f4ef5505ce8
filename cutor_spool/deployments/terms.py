"""The spool operator's terms and conditions (`spool/terms.md`), which `deploy` shows and the owner
signs.

The operator edits `terms.md` as they like; `cutor-spool init` writes the default below when there
is none. What an owner accepts is one version of it, by content: `deploy` reads the file once,
shows those bytes, stores those same bytes in `cas/` and signs their CID, so that an edit made
between showing and signing cannot change what was accepted, and the text accepted stays in the
store for as long as the deployment.
"""

from __future__ import annotations

import os

from cutor_spool.atomic import read_bytes
from cutor_spool.deployments.errors import DeploymentError
from cutor_spool.deployments.store import Store
from cutor_spool.errors import CutorError
from cutor_spool.layout import SpoolPaths

MAX_TERMS = 1 << 20

DEFAULT_TERMS = """\
# Terms and conditions of this spool

These are the default terms that `cutor-spool init` writes. The operator of this spool should
replace them with their own (edit this file: deployments made later accept the new text; those
made before keep the version they accepted).

By deploying code to this spool, you (the owner of the signing key) agree that:

1. You have the right to deploy the code and data of the bundle, and they break no law.
2. The operator runs your code in a sandbox, on its own hardware, within the limits the spool
   sets, and may refuse, stop or delete any deployment or invocation at any time.
3. Your bundle, its specification (with your public key) and the results of its builds and
   invocations are stored in this spool and may be read by the spool's users and operator. Your
   env vars are stored only sealed to the spool's key; the operator's executors open them to run
   your code. What your program prints is its own business.
4. The service is provided as is, without any warranty; the operator is not liable for any loss.
"""


def write_default_terms(paths: SpoolPaths) -> bool:
    """Writes the default terms unless the spool has terms already; True if it wrote them."""
    if os.path.lexists(paths.terms):
        return False
    tmp = paths.tmp / f".terms.md.{os.getpid()}"
    tmp.write_text(DEFAULT_TERMS)
    try:
        os.link(tmp, paths.terms)  # never replaces terms an operator wrote meanwhile
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def read_terms(paths: SpoolPaths) -> bytes:
    """The terms as they are now; a DeploymentError when the spool has none or they are unreadable."""
    try:
        return read_bytes(paths.terms, MAX_TERMS, beneath=paths.root)
    except FileNotFoundError:
        raise DeploymentError(
            f"the spool has no terms to accept ({paths.terms} is missing): `cutor-spool init` writes the default ones"
        ) from None
    except (OSError, CutorError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DeploymentError(f"the spool's terms cannot be read ({paths.terms}: {reason})") from None


def store_terms(paths: SpoolPaths, store: Store, terms: bytes | None = None) -> str:
    """Stores the terms (`terms`, the bytes shown to the owner, or else the spool's file as it is
    now) in the store and returns their CID."""
    return store.put(read_terms(paths) if terms is None else terms)
