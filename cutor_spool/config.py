"""`spool.yaml`: the spool-wide configuration every worker and client reads.

One file for all hosts that mount the spool. What is per host (where slot locks and work
directories live) comes from the worker's command line, not from here.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from cutor_spool.cpus import parse_cpu_list
from cutor_spool.errors import ConfigError
from cutor_spool.languages import LanguagesConfig
from cutor_spool.limits import Duration, Limits, LimitsSpec, Size, within
from cutor_spool.submission import Priority
from cutor_spool.yamlload import YamlProblem, load_yaml

CONFIG_NAME = "spool.yaml"
FORMAT_VERSION = 1


class BackendName(StrEnum):
    BUBBLEWRAP = "bubblewrap"
    DOCKER = "docker"


class StageKind(StrEnum):
    DEPENDENCIES = "dependencies"
    COMPILE = "compile"
    RUN = "run"
    TEST = "test"
    CHECKER = "checker"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


DEFAULT_LIMITS = LimitsSpec(
    cpu_time=5,
    wall_time=10,
    memory=512 * 2**20,
    processes=64,
    file_size=64 * 2**20,
    open_files=256,
    stack=64 * 2**20,
    output=1 * 2**20,
)
MAXIMUM_LIMITS = LimitsSpec(
    cpu_time=600,
    wall_time=1800,
    memory=8 * 2**30,
    processes=512,
    file_size=1 * 2**30,
    open_files=4096,
    stack=1 * 2**30,
    output=64 * 2**20,
)
STAGE_DEFAULTS = {
    StageKind.COMPILE: LimitsSpec(cpu_time=30, wall_time=60, memory=1 * 2**30),
    StageKind.DEPENDENCIES: LimitsSpec(cpu_time=600, wall_time=900, memory=4 * 2**30, output=4 * 2**20),
    StageKind.CHECKER: LimitsSpec(cpu_time=10, wall_time=20),
}


class LimitsConfig(_Strict):
    default: LimitsSpec = DEFAULT_LIMITS
    maximum: LimitsSpec = MAXIMUM_LIMITS
    stages: dict[StageKind, LimitsSpec] = Field(default_factory=lambda: dict(STAGE_DEFAULTS))

    # Worked out once per loaded config (it is frozen), not for every stage of every submission.
    # (model_copy would share this cache: a changed config is validated anew, never copied.)
    _resolved: dict[StageKind | None, Limits] = PrivateAttr(default_factory=dict)

    def resolved_maximum(self) -> Limits:
        if (found := self._resolved.get(None)) is None:
            found = self._resolved[None] = Limits.from_spec(MAXIMUM_LIMITS).over(self.maximum)
        return found

    def stage_default(self, stage: StageKind) -> Limits:
        if (found := self._resolved.get(stage)) is not None:
            return found
        base = Limits.from_spec(DEFAULT_LIMITS).over(self.default)
        if stage == StageKind.TEST:  # tests default to the run stage's limits
            found = base.over(self.stages.get(StageKind.RUN), self.stages.get(StageKind.TEST))
        else:
            found = base.over(self.stages.get(stage))
        self._resolved[stage] = found
        return found

    @model_validator(mode="after")
    def _defaults_within_maximum(self) -> LimitsConfig:
        maximum = self.resolved_maximum()
        for stage in StageKind:
            default = self.stage_default(stage)
            for key, value in default.to_json().items():
                if not within(key, value, getattr(maximum, key)):
                    raise ValueError(f"the {stage} default {key} is above limits.maximum.{key}")
        return self


class SeccompAction(StrEnum):
    ERRNO = "errno"  # a denied call fails with EPERM; the program's verdict is its own
    KILL = "kill"  # a denied call kills the process; the stage ends `security_violation`


class SeccompConfig(_Strict):
    """The stages' system call filter (runner/seccomp.py holds the policy and checks the names)."""

    enabled: bool = True
    action: SeccompAction = SeccompAction.ERRNO
    allow: list[str] = Field(default_factory=list, description="groups or calls of the policy to allow")
    deny: list[str] = Field(default_factory=list, description="more system calls to deny")


class PinningConfig(_Strict):
    """CPU pinning of slots (README, "CPU pinning"): off by default, because a pinned
    stage has one CPU, whatever threads it starts (on a 2-core host, half the machine)."""

    enabled: bool = Field(default=False, description="run each slot's stages on one CPU of their own")
    cpus: tuple[int, ...] | None = Field(
        default=None,
        description='the CPUs slots may be given, as "0-3,8" or [0, 1, 2, 3]; default: every CPU the executor may use',
    )

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpu_list(cls, value: object) -> tuple[int, ...] | None:
        if value is None:
            return None
        cpus = parse_cpu_list(value)
        if not cpus:
            raise ValueError("an empty CPU list: leave `cpus` out to use every CPU")
        return cpus


class SandboxConfig(_Strict):
    uid_base: int = Field(default=61000, ge=1000, le=2**31 - 70000)
    slots: int = Field(default=64, ge=1, le=65536)
    work_size: Size = 512 * 2**20
    tmp_size: Size = 64 * 2**20
    generated_cache: Size = Field(
        default=1 << 30,
        description="the most the host's cache of generated test inputs keeps (runner/judge/generated.py)",
    )
    ro_binds: list[str] = Field(default_factory=list, description="extra host paths mounted read-only")
    seccomp: SeccompConfig = SeccompConfig()
    pinning: PinningConfig = PinningConfig()
    warm_slots: bool = Field(
        default=True,
        description="bubblewrap: each stage enters a read-only tree made once per environment instead of a fresh "
        "bwrap (runner/keeper.py; about half the stage's cost); false: a fresh bwrap per stage",
    )
    # The default: what Debian 12's toolchains read from /etc. OpenJDK's conf/ files are symlinks
    # from /usr/lib/jvm into /etc/java-17-openjdk (without java.security javac dies "Error loading
    # java.security file"); Free Pascal reads /etc/fpc.cfg (through alternatives, fpc-<version>.cfg).
    etc: list[str] = Field(
        default_factory=lambda: ["java-*", "fpc.cfg", "fpc-*.cfg"],
        description="what of the host's /etc a bubblewrap stage sees besides the base (globs relative to /etc; "
        "the default: what Debian's toolchains read there); shadow files, sudoers, SSH, private keys and "
        "files others may not read are never copied (docs/security.md)",
    )

    @model_validator(mode="after")
    def _etc_patterns(self) -> SandboxConfig:
        for pattern in self.etc:
            if not pattern or pattern.startswith("/") or ".." in pattern.split("/") or "\0" in pattern:
                raise ValueError(f"sandbox.etc: {pattern!r} is not a pattern relative to /etc (like 'java-*')")
        return self


class DockerConfig(_Strict):
    image: str = "cutor-spool-sandbox:latest"
    bind_host_usr: bool = Field(
        default=False, description="mount the host's /usr read-only (for host-built toolchains)"
    )
    url: str | None = Field(
        default=None,
        description="the local engine's socket, unix://PATH (default: $DOCKER_HOST, else /var/run/docker.sock); "
        "a remote engine cannot work: stages are accounted through this host's cgroups",
    )
    network: str = Field(default="bridge", description="the Docker network of stages that may use the network")
    remove_timeout: Duration = Field(default=120.0, gt=0, description="per attempt at removing a container")


class StatusPageConfig(_Strict):
    enabled: bool = True
    interval: Duration = 2.0
    recent: int = Field(default=200, ge=1)


class RetentionConfig(_Strict):
    """The workers' own pruning of finished submissions (watcher/prune.py); off by default."""

    older_than: Duration | None = Field(default=None, description="remove done submissions that ended longer ago")
    keep_failed: bool = Field(default=False, description="keep those that did not end ok/accepted")
    interval: Duration = Field(default=600.0, gt=0, description="how often each worker looks")


class NotifyConfig(_Strict):
    """Callbacks when a submission ends (watcher/callbacks.py)."""

    urls: bool = Field(default=False, description="may a submission name its own notify URL?")
    allowed_hosts: list[str] = Field(default_factory=list, description="host names or *.domain patterns; empty: any")
    command: str | None = Field(default=None, description="operators' hook: run with status.json on stdin")
    timeout: Duration = Field(default=10.0, gt=0, description="per try")
    retries: int = Field(default=3, ge=1, le=10, description="tries per URL, with backoff 1 s, 2 s, 4 s, ...")


class NixConfig(_Strict):
    """Dependency environments (cutor_spool/builder, docs/nix.md)."""

    nixpkgs: str | None = Field(default=None, description="a path or a pinned flake reference")
    system: str | None = Field(default=None, description="default: this host's, as x86_64-linux")
    build_timeout: Duration = 600
    build_memory: Size = 4 * 2**30
    build_log: Size = 4 * 2**20
    build_processes: int = Field(default=4096, ge=16, description="pids limit of a build's process tree")
    binary_cache: bool = Field(default=True, description="export every environment to builds/cache (signed)")
    sandbox: bool = Field(default=True, description="Nix's build sandbox; false only where the host cannot")
    sandbox_paths: list[str] = Field(
        default_factory=list, description="host paths builds may see (the tests' stand-in channel needs /usr)"
    )
    substituters: list[str] = Field(default_factory=list, description="builders' substituters; none by default")
    trusted_public_keys: list[str] = Field(
        default_factory=list, description="keys of substituters and of the spool's cache (default: builds/cache/keys)"
    )


class SharedConfig(_Strict):
    """A spool shared by users who do not trust each other (docs/shared-spool.md): set by
    `cutor-spool init --shared GROUP`; without it the spool is single-user, as before."""

    submitters: str = Field(description="the group (name or number) whose members may drop into incoming/")
    operators: str = Field(
        default="root", description="the group (name or number) that may read every result and the status page"
    )


class DeploymentsConfig(_Strict):
    """Invocations of deployments (docs/deployments.md, "Invoke")."""

    invoke_wall_time: Duration = Field(default=15.0, gt=0, description="an invocation's wall clock, by default")
    max_invoke_wall_time: Duration = Field(
        default=60.0, gt=0, description="the most a deployment's own run.wall_time may ask for"
    )
    max_body: Size = Field(default=10 * 2**20, ge=0, description="the largest request body an invocation may carry")
    server_key: str | None = Field(
        default=None, description="path of the server's private key file on the executors' hosts (never in the spool)"
    )
    build_wait: Duration = Field(
        default=5.0, ge=0, description="how long an invocation waits for a pending build before it is handed back"
    )
    # The escrow's price (docs/ledger.md): an invocation is held fee + rate x its wall-time limit
    # before it runs and settled to fee + rate x the wall time it took. 0 and 0: free (holds of 0).
    fee: int = Field(default=0, ge=0, description="the price of one request, in micro-credits (1 credit = 1000000)")
    rate: int = Field(
        default=0, ge=0, description="the price of one second of an invocation's wall time, in micro-credits"
    )
    hold_margin: Duration = Field(
        default=30.0, gt=0, description="a hold outlives its invocation's wall-time limit by this much unless renewed"
    )
    idempotency_ttl: Duration = Field(
        default=86400.0, gt=0, description="how long an Idempotency-Key is remembered (then a retry runs anew)"
    )
    signature_max_age: Duration = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="how old a payer's signature may be when an executor takes the request (docs/payers.md)",
    )

    @model_validator(mode="after")
    def _default_within_maximum(self) -> DeploymentsConfig:
        if self.invoke_wall_time > self.max_invoke_wall_time:
            raise ValueError("invoke_wall_time is above max_invoke_wall_time")
        return self


class SpoolConfig(_Strict):
    version: Literal[1] = 1
    backend: BackendName = BackendName.BUBBLEWRAP
    settle: Duration = 2.0
    heartbeat: Duration = 2.0
    lease_timeout: Duration = 30.0
    max_attempts: int = Field(default=3, ge=1, le=100)
    max_lost_leases: int = Field(default=10, ge=1, le=1000)
    rescan: Duration = 5.0
    poll_interval: Duration = 0.5
    allow_network: bool = False
    max_submission_size: Size = 64 * 2**20
    max_files: int = Field(default=10_000, ge=1)
    max_priority: Priority = Field(default="high", description="the highest lane a submission may ask for")
    retention: RetentionConfig = RetentionConfig()
    notify: NotifyConfig = NotifyConfig()
    limits: LimitsConfig = LimitsConfig()
    sandbox: SandboxConfig = SandboxConfig()
    docker: DockerConfig = DockerConfig()
    nix: NixConfig = NixConfig()
    status_page: StatusPageConfig = StatusPageConfig()
    shared: SharedConfig | None = None
    deployments: DeploymentsConfig = DeploymentsConfig()
    # Language presets over the shipped ones (languages.py, languages.yaml; README "Language presets").
    languages: LanguagesConfig = Field(
        default_factory=LanguagesConfig,
        description="language presets: an entry adds or replaces one (`base: ID` changes a shipped one), "
        "{alias: ID} names one, null removes one",
    )

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> SpoolConfig:
        if self.heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        if self.lease_timeout < 3 * self.heartbeat:
            raise ValueError("lease_timeout must be at least three heartbeats, or live workers get reaped")
        return self


def config_digest(spool: Path) -> str | None:
    """A short digest of spool.yaml's bytes: workers say in their heartbeat which one they run."""
    try:
        return hashlib.sha256((spool / CONFIG_NAME).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def load_config(spool: Path) -> SpoolConfig:
    path = spool / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return SpoolConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        data = load_yaml(text) or {}
        return SpoolConfig.model_validate(data)
    except YamlProblem as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
