"""`StageRunner`: builds and runs the sandboxed stages of one submission.

The pipeline runs the compile stage with it and every grader runs its stages with it (a test, a
checker program, later an interactor). It lives apart from the pipeline so that graders, which the
pipeline chooses, need not import the pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from cutor_spool.errors import SandboxError
from cutor_spool.limits import Limits
from cutor_spool.runner.intake import Plan, Script
from cutor_spool.runner.live import LIVE_STAGES, LiveOutput
from cutor_spool.runner.results import Reporter
from cutor_spool.runner.sandbox import Sandbox
from cutor_spool.runner.stage import StageOutput, StageSpec, StageStatus
from cutor_spool.watcher.cancel import Cancelled

# A one-line script that is one simple command: no lists, pipes, subshells, substitutions, groups,
# keywords, builtins (`exec exit 3` is no exit) or leading assignments. `exec` may be put before it.
_SIMPLE = re.compile(r"[^;&|()`{}!\n\\]+")
_NOT_SIMPLE_START = re.compile(
    r"\s*(\w+=|[.:](\s|$)|#|(if|then|else|elif|fi|for|while|until|do|done|case|esac|exec|function|exit|return|cd|export|"
    r"set|unset|shift|read|wait|eval|source|trap|ulimit|umask|alias|unalias|break|continue|local|readonly|times|"
    r"type|hash|getopts|command|builtin|jobs|fg|bg|kill|time)\b)"
)


def exec_simple(text: bytes) -> bytes:
    """`exec <command>` for a script that is one simple command (`./sol`, `python3 sol.py "$@"`), so
    that the shell is replaced by the program and the program's own end, a signal included, is the
    stage's (a shell reports a child killed by signal N as its own exit 128+N, which a program's
    `exit(128+N)` cannot be told from; dash does not exec a script's last command itself). Any
    other script is left as it is, and judged by how the shell ended. Pure."""
    line = text.decode("utf-8", "surrogateescape").strip()
    if not line or not _SIMPLE.fullmatch(line) or "$(" in line or _NOT_SIMPLE_START.match(line):
        return text
    return b"exec " + line.encode("utf-8", "surrogateescape") + b"\n"


# Words a shell passes on unchanged: no quoting, expansion, globbing, redirection or comment.
_PLAIN_WORDS = re.compile(r"[A-Za-z0-9_./+,:=@%^-]+([ \t]+[A-Za-z0-9_./+,:=@%^-]+)*")
# Commands a shell runs as its own builtins, which may differ from the program of the same name
# (dash's `echo -e` prints "-e", coreutils' interprets it).
_SHELL_BUILTINS = frozenset({"printf", "test", "[", "pwd", "true", "false"})  # `echo`: see plain_argv


def plain_argv(text: str) -> tuple[str, ...] | None:
    """The argv of a script that is one simple command of plain words (`./sol`, `cat`, `python3
    sol.py`), which the launcher can exec itself with no shell in between (issue 18: a shell's exec
    is a tenth of a trivial stage); None for anything a shell would interpret: quotes, `$`,
    globs, redirections, assignments, keywords, builtins, several lines. The shell would ignore
    the script's own arguments for such a script, and so does the argv. `echo` stays a plain
    command when no argument starts with `-`: then dash's builtin and coreutils' agree. Pure."""
    line = text.strip()
    if not _PLAIN_WORDS.fullmatch(line) or _NOT_SIMPLE_START.match(line):
        return None
    words = tuple(line.split())
    if words[0] == "echo":
        return None if any(word.startswith("-") for word in words[1:]) else words
    return None if words[0] in _SHELL_BUILTINS or "=" in words[0] else words


@dataclass(frozen=True)
class Environment:
    """What the dependencies stage gives the later stages: a script to source, the store paths to
    mount read-only."""

    env_script: bytes | None = None
    ro_binds: tuple[str, ...] = ()
    shell: str = "/bin/bash"


@dataclass
class StageRunner:
    """Builds and runs the stages of one submission in its sandbox (used by the pipeline and by
    every grader). An internal error of the sandbox is a system failure, not the submission's fault."""

    plan: Plan
    sandbox: Sandbox
    reporter: Reporter
    cancel: Cancelled
    env: Environment = field(default_factory=Environment)

    @staticmethod
    def script_command(
        script: Script, args: tuple[str, ...] = (), *, root: str = "/work"
    ) -> tuple[tuple[str, ...], dict[str, bytes]]:
        """argv and per-stage files for a script: inline text of plain words is exec'd as it is
        (`plain_argv`), other inline text is placed at /run/cutor/script; a file of the submission
        runs from /work. `#!` scripts are executed; others go to /bin/sh.
        Pure: nothing here reads /work, which the job controls once a stage has run."""
        if script.text is not None:
            argv = plain_argv(script.text)
            if argv is not None:
                return argv, {}
            data = exec_simple(script.text.encode("utf-8", "surrogatepass"))
            return ("/bin/sh", "/run/cutor/script", *args), {"script": data}
        assert script.file is not None
        if script.shebang:
            return (f"{root}/{script.file}", *args), {}
        return ("/bin/sh", f"{root}/{script.file}", *args), {}

    def spec(
        self,
        name: str,
        command: tuple[str, ...],
        limits: Limits,
        *,
        stdin: bytes = b"",
        files: Mapping[str, bytes] | None = None,
        workdir: str = "work",
        env: Mapping[str, str] | None = None,
        network: bool | None = None,
    ) -> StageSpec:
        stage_files = dict(files or {})
        env_script = None
        if self.env.env_script is not None:
            stage_files["env.sh"] = self.env.env_script
            env_script = "/run/cutor/env.sh"
        sub = self.plan.submission
        return StageSpec(
            name=name,
            command=command,
            limits=limits,
            env=dict(sub.env if env is None else env),
            stdin=stdin,
            files=stage_files,
            network=sub.network if network is None else network,
            ro_binds=self.env.ro_binds,
            env_script=env_script,
            env_shell=self.env.shell,
            workdir=workdir,
        )

    def run(self, spec: StageSpec) -> StageOutput:
        self.cancel.check()
        live = None
        if spec.name in LIVE_STAGES:
            live = LiveOutput(self.reporter.dir, self.reporter.anchor, spec.name).start()
            spec = replace(spec, live=live.feed)
        try:
            output = self.sandbox.run(spec, self.cancel.event)
        finally:
            if live is not None:
                live.close()
        self.cancel.check()
        if output.status == StageStatus.INTERNAL_ERROR:
            raise SandboxError(f"stage {spec.name}: {output.message or 'internal error'}")
        return output
