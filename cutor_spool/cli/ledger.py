"""`cutor-spool ledger deposit|balance|history|audit`: the escrow's accounts (docs/ledger.md).

Amounts on the command line are credits with up to six decimals ("2", "0.25"); the ledger keeps
integers of micro-credits, which `--json` prints as they are. A bad account or amount exits 2
(usage) and writes nothing; a failed audit exits 1 after listing every problem.
"""

from __future__ import annotations

import sys

import click

from cutor_spool.cli.deployments import spool_option
from cutor_spool.cli.output import EXIT_USAGE, emit_json, say
from cutor_spool.layout import SpoolPaths
from cutor_spool.ledger import Ledger, LedgerError, Record, format_amount, parse_account, parse_amount


def _ledger(ctx: click.Context) -> Ledger:
    paths = SpoolPaths(ctx.find_root().obj.spool)
    if not paths.exists():
        raise click.ClickException(f"{paths.root} is not a spool (run: cutor-spool --spool {paths.root} init)")
    return Ledger(paths.root)


def _account(text: str) -> str:
    try:
        return parse_account(text)
    except LedgerError as exc:
        say(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def _amount(text: str) -> int:
    try:
        units = parse_amount(text)
    except LedgerError as exc:
        say(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if units == 0:
        say(f"error: a deposit must be more than zero, not {text!r}", err=True)
        sys.exit(EXIT_USAGE)
    return units


def _line(record: Record) -> str:
    what = {
        "deposit": f"+{format_amount(record.amount)}",
        "hold": f"hold {format_amount(record.amount)} for {record.hold_id}",
        "settle": f"-{format_amount(record.amount)} for {record.hold_id} (held {format_amount(record.held)})",
        "release": f"released {record.hold_id} ({record.reason})",
    }[record.kind]
    note = f"  {record.note}" if record.note else ""
    return f"{record.seq:>8}  {record.kind:<8} {what}  available {format_amount(record.after.available)}{note}"


@click.group(name="ledger")
def ledger_() -> None:
    """The escrow: accounts (payers' public keys), deposits, holds and charges, kept in SPOOL/ledger/.

    \b
    ACCOUNT is a public key as `keys show` prints it (ed25519:…) or a key file.
    AMOUNT is in credits, up to 6 decimals (the ledger's unit is the micro-credit).
    Example:
      cutor-spool ledger deposit payer.key 25
      cutor-spool ledger balance payer.key
      cutor-spool ledger audit
    """


@ledger_.command()
@click.argument("account")
@click.argument("amount")
@click.option("--note", default="", help="Why (kept in the journal).")
@click.option("--json", "as_json", is_flag=True, help="Print the journal record as JSON.")
@spool_option
@click.pass_context
def deposit(ctx: click.Context, account: str, amount: str, note: str, as_json: bool) -> None:
    """Credit AMOUNT credits to ACCOUNT."""
    account_text, units = _account(account), _amount(amount)
    record = _ledger(ctx).deposit(account_text, units, note=note)
    if as_json:
        emit_json(record.model_dump())
    else:
        say(f"{account_text}: +{format_amount(units)}, available {format_amount(record.after.available)}")


@ledger_.command()
@click.argument("account")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (amounts in micro-credits).")
@spool_option
@click.pass_context
def balance(ctx: click.Context, account: str, as_json: bool) -> None:
    """ACCOUNT's deposits, charges, live holds and what is available."""
    result = _ledger(ctx).balance(_account(account))
    if as_json:
        emit_json(result.model_dump())
        return
    say(result.account)
    for name in ("deposited", "charged", "held", "available"):
        say(f"  {name:<10} {format_amount(getattr(result, name)):>20}")


@ledger_.command()
@click.argument("account")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the last N records.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@spool_option
@click.pass_context
def history(ctx: click.Context, account: str, limit: int | None, as_json: bool) -> None:
    """ACCOUNT's journal, oldest first."""
    records = _ledger(ctx).history(_account(account), limit=limit)
    if as_json:
        emit_json([r.model_dump() for r in records])
        return
    for record in records:
        say(_line(record))


@ledger_.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@spool_option
@click.pass_context
def audit(ctx: click.Context, as_json: bool) -> None:
    """Recompute every balance from the journals and check every rule; exit 1 listing every problem."""
    report = _ledger(ctx).audit()
    if as_json:
        emit_json(report.model_dump())
    else:
        for account, bal in report.accounts.items():
            say(
                f"{account}  deposited {format_amount(bal.deposited)}  charged {format_amount(bal.charged)}"
                f"  held {format_amount(bal.held)}  available {format_amount(bal.available)}"
            )
        say(f"{len(report.accounts)} accounts, {report.records} records, charged {format_amount(report.charged)}")
        for problem in report.problems:
            say(f"problem: {problem}", err=True)
        say("audit: ok" if report.ok else f"audit: FAILED, {len(report.problems)} problems", err=not report.ok)
    if not report.ok:
        sys.exit(1)


commands: list[click.Command] = [ledger_]
