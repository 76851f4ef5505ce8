"""The escrow: a ledger of accounts, holds and charges kept in the spool, without a database (docs/ledger.md)."""
