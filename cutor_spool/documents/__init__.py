"""The documents the spool holds and clients read: their vocabulary and their shapes."""
