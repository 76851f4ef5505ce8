"""`cutor-spool slurm`: print (or submit) the sbatch script of N pilot executors (engines/slurm.py)."""

from __future__ import annotations

import os
import shlex
import subprocess

import click

from cutor_spool.cli.output import say
from cutor_spool.cli.workers import parse_duration_option
from cutor_spool.engines.slurm import SlurmJob


@click.command("slurm")
@click.option("--pilots", "-n", type=click.IntRange(1, 100_000), default=1, show_default=True, help="Array tasks.")
@click.option(
    "--concurrency", "-c", type=click.IntRange(1, 1024), default=1, show_default=True, help="Each pilot's slots."
)
@click.option(
    "--exit-when-idle",
    metavar="DURATION",
    default="5m",
    show_default=True,
    callback=parse_duration_option,
    help="A pilot exits 0 once the queue gave it nothing for this long.",
)
@click.option("--max-jobs", type=click.IntRange(1), default=None, help="A pilot exits 0 after N claims.")
@click.option("--time", "time_limit", metavar="TIME", help="Slurm's time limit per task (e.g. 2:00:00).")
@click.option("--partition", "-p", help="Slurm partition.")
@click.option("--exclusive", is_flag=True, help="A whole node per pilot (then give it a matching --concurrency).")
@click.option(
    "--cpus-per-task",
    type=click.IntRange(1),
    default=None,
    help="CPUs Slurm gives each pilot (default: --concurrency); not with --exclusive.",
)
@click.option(
    "--signal-grace",
    metavar="DURATION",
    default="120s",
    show_default=True,
    callback=parse_duration_option,
    help="Slurm sends SIGTERM this long before the time limit (--signal=B:TERM@N); the executor "
    "finishes or hands back its work in this time less 10 s.",
)
@click.option("--job-name", default="cutor-spool", show_default=True, help="The array job's name (sbatch --job-name).")
@click.option(
    "--output", "-o", default="cutor-spool-%A_%a.out", show_default=True, help="Each task's log (sbatch --output)."
)
@click.option("--error", "-e", default=None, help="Each task's stderr, if not with --output (sbatch --error).")
@click.option("--state-dir", default=None, help="The executors' --state-dir on the nodes (default: theirs).")
@click.option("--invocations", type=click.IntRange(0, 1024), default=None, help="The executors' --invocations.")
@click.option(
    "--bin",
    "executable",
    default=None,
    help="The cutor-spool command on the nodes (default: this one); words split as by a shell.",
)
@click.option(
    "--sbatch-option",
    "sbatch_options",
    multiple=True,
    metavar="--NAME=VALUE",
    help="Another #SBATCH line, verbatim (--account=..., --mem=...); repeatable.",
)
@click.option("--submit", is_flag=True, help="Run sbatch on the script and print the job id.")
@click.pass_context
def slurm(
    ctx: click.Context,
    pilots: int,
    concurrency: int,
    exit_when_idle: float,
    max_jobs: int | None,
    time_limit: str | None,
    partition: str | None,
    exclusive: bool,
    cpus_per_task: int | None,
    signal_grace: float,
    job_name: str,
    output: str,
    error: str | None,
    state_dir: str | None,
    invocations: int | None,
    executable: str | None,
    sbatch_options: tuple[str, ...],
    submit: bool,
) -> None:
    """Print the sbatch script that runs N pilot executors of the spool as one Slurm array job.

    Each task runs one `cutor-spool executor --exit-when-idle ...` on a node that mounts the
    spool at the same path, as root (the sandbox needs it; submissions never run as root), and
    exits 0 when the queue is empty. The nodes' slurm.conf needs ProctrackType=proctrack/pgid
    and TaskPlugin=task/none (docs/deploy.md, "Slurm").

    \b
    Examples:
      cutor-spool --spool /shared/spool slurm --pilots 8 --concurrency 4 --time 4:00:00 > pilots.sbatch
      cutor-spool --spool /shared/spool slurm --pilots 8 --exclusive --concurrency 16 --submit
    """
    from cutor_spool.systemd import default_executable

    spool = ctx.obj.spool
    if not (spool / "spool.yaml").is_file():
        raise click.ClickException(f"{spool} is not an initialised spool (no spool.yaml): the pilots would refuse it")
    job = SlurmJob(
        spool=str(spool),
        executable=shlex.split(executable) if executable else [default_executable()],
        pilots=pilots,
        concurrency=concurrency,
        exit_when_idle=exit_when_idle,
        max_jobs=max_jobs,
        time=time_limit,
        partition=partition,
        exclusive=exclusive,
        cpus_per_task=cpus_per_task,
        signal_grace=round(signal_grace),
        job_name=job_name,
        output=output,
        error=error,
        state_dir=state_dir,
        invocations=invocations,
        sbatch_options=list(sbatch_options),
    )
    problems = job.problems()
    if problems:
        raise click.UsageError("; ".join(problems))
    script = job.script()
    if not submit:
        click.echo(script, nl=False)
        return
    try:
        done = subprocess.run(
            ["sbatch", "--parsable"], input=script, capture_output=True, text=True, check=False, env=os.environ
        )
    except FileNotFoundError as exc:
        raise click.ClickException("sbatch is not on PATH: print the script and submit it where Slurm is") from exc
    if done.returncode != 0:
        raise click.ClickException(f"sbatch failed (exit {done.returncode}): {done.stderr.strip()}")
    job_id = done.stdout.strip().split(";")[0]  # `id;cluster` on a federation
    say(f"submitted {pilots} pilot(s) as Slurm job {job_id}", err=True)
    click.echo(job_id)


commands: list[click.Command] = [slurm]
