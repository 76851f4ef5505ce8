"""cutor-spool: a filesystem-spool batch runner for untrusted code, with dependencies from Nix."""

__version__ = "0.1.0"
