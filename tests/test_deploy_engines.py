"""deploy/kubernetes and deploy/nomad, checked offline (docs/deploy.md, "Kubernetes" and "Nomad").

- Every Kubernetes manifest validates against the API schemas of a pinned Kubernetes version in
  kubernetes-validate's strict mode (an unknown field fails); KEDA's ScaledObject, a custom
  resource that those schemas lack, against a JSON schema written from KEDA's documented fields
  (tests/deploy/keda-scaledobject.schema.json). `kubectl kustomize` renders them where kubectl is.
- The Nomad job is parsed by python-hcl2 and its structure checked (`nomad job validate` needs the
  Nomad binary, which this machine has not).
- Every command line in them (containers, probes, Nomad tasks and checks) is parsed by the real
  CLI, so that an option renamed in cutor_spool fails here; the metrics their autoscalers query are
  ones metrics.prom has; their stop timeouts exceed the workers' --grace.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import hcl2
import jsonschema
import kubernetes_validate
import pytest
import yaml

from cutor_spool.cli import cli
from cutor_spool.config import StatusPageConfig
from cutor_spool.layout import SpoolPaths
from cutor_spool.web_status import regenerate

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
NOMAD = ROOT / "deploy" / "nomad" / "cutor-spool.nomad.hcl"
KEDA_SCHEMA = json.loads((Path(__file__).parent / "deploy" / "keda-scaledobject.schema.json").read_text())
KUBERNETES_VERSION = "1.32.0"  # the oldest release still maintained upstream when this was written


# -- reading them ------------------------------------------------------------------------------------
def manifest_files() -> list[Path]:
    """Those kustomization.yaml lists, then the alternatives (validated, not applied)."""
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    return [KUBERNETES / name for name in listed] + sorted((KUBERNETES / "alternatives").glob("*.yaml"))


def documents() -> list[dict[str, Any]]:
    return [d for path in manifest_files() for d in yaml.safe_load_all(path.read_text()) if d]


def unquote(value: Any) -> Any:
    """python-hcl2 keeps a string's quotes; a list or number comes as it is."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value


def blocks(parent: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """Labelled blocks (`group "executor" { ... }`) of one kind, by label."""
    return {unquote(label): body for item in parent.get(kind, []) for label, body in item.items()}


def nomad_job() -> dict[str, Any]:
    with NOMAD.open() as fh:
        spec = hcl2.load(fh)
    variables = {unquote(k): unquote(v["default"]) for k, v in blocks(spec, "variable").items()}
    (job,) = blocks(spec, "job").values()
    text = json.dumps(job)
    for name, value in variables.items():  # HCL's interpolation of this file's own variables
        text = text.replace("${var." + name + "}", value)
    parsed: dict[str, Any] = json.loads(text)
    return parsed


# -- command lines ---------------------------------------------------------------------------------
def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def kubernetes_command_lines() -> list[list[str]]:
    out = []
    for doc in documents():
        for container in containers(doc):
            out.append([*container.get("command", []), *container.get("args", [])])
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "exec" in container.get(probe, {}):
                    out.append(container[probe]["exec"]["command"])
    return out


def nomad_tasks() -> dict[str, dict[str, Any]]:
    return {
        name: task for group in blocks(nomad_job(), "group").values() for name, task in blocks(group, "task").items()
    }


def nomad_command_lines() -> list[list[str]]:
    out = []
    for task in nomad_tasks().values():
        (config,) = task["config"]
        out.append([unquote(config["command"]), *unquote(config.get("args", []))])
        for service in task.get("service", []):
            for check in service.get("check", []):
                if unquote(check["type"]) == "script":
                    out.append([unquote(check["command"]), *unquote(check.get("args", []))])
    return out


def cutor_spool_invocations(argv: list[str]) -> list[list[str]]:
    """The cutor-spool command lines of one argv: itself, or those of a `sh -c` script."""
    if argv[:2] == ["sh", "-c"]:
        found = []
        for part in re.split(r"&&|\|\||;", argv[2]):
            words = shlex.split(part)
            words = words[1:] if words[:1] == ["exec"] else words
            if words[:1] == ["cutor-spool"]:
                found.append(words)
        return found
    return [argv] if argv[:1] == ["cutor-spool"] else []


def parse(argv: list[str]) -> click.Context:
    """Parses a command line as `cutor-spool` would, without running it: click.UsageError (an
    unknown option, a bad choice, a missing argument) if it would not start."""
    assert argv[0] == "cutor-spool"
    with cli.make_context("cutor-spool", list(argv[1:])) as ctx:
        name, command, rest = cli.resolve_command(ctx, ctx._protected_args + ctx.args)
        assert command is not None, argv
        return command.make_context(name, rest, parent=ctx)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# -- Kubernetes ------------------------------------------------------------------------------------
def test_every_manifest_validates_against_the_pinned_api_in_strict_mode() -> None:
    docs = documents()
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "PersistentVolumeClaim", "Deployment", "Job", "Service", "PodDisruptionBudget"} <= kinds
    assert {"ScaledObject", "HorizontalPodAutoscaler", "ConfigMap"} <= kinds
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, KEDA_SCHEMA)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_refuses_what_a_cluster_would() -> None:
    """The checks above can fail: a misspelt field, a wrong type, a trigger without its query."""
    executor = next(
        d for d in documents() if d["metadata"]["name"] == "cutor-spool-executor" and d["kind"] == "Deployment"
    )
    misspelt = copy.deepcopy(executor)
    misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]["priviliged"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    wrong_type = copy.deepcopy(executor)
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "45s"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSION, strict=True)
    scaled = next(d for d in documents() if d["kind"] == "ScaledObject")
    no_query = copy.deepcopy(scaled)
    del no_query["spec"]["triggers"][0]["metadata"]["query"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(no_query, KEDA_SCHEMA)
    unknown = copy.deepcopy(scaled)
    unknown["spec"]["minReplicas"] = 1  # the HPA's name, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(unknown, KEDA_SCHEMA)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")
def test_kustomize_renders_every_listed_manifest_into_the_namespace() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, check=True)
    out = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    listed = [d for path in manifest_files() if path.parent == KUBERNETES for d in yaml.safe_load_all(path.read_text())]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in out) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in listed if d
    )
    for doc in out:
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "cutor-spool", doc["metadata"]
        if doc["kind"] != "ScaledObject":
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    images = {c["image"] for d in out for c in containers(d)}
    assert "cutor-spool:latest" in images


def deployment(name: str) -> dict[str, Any]:
    return next(d for d in documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


@pytest.mark.parametrize("kind", ["executor", "builder"])
def test_workers_stop_within_their_grace_and_are_probed_by_their_heartbeat(kind: str) -> None:
    pod = deployment(f"cutor-spool-{kind}")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    argv = container["command"]
    grace = float(option(argv, "--grace"))
    assert pod["terminationGracePeriodSeconds"] >= grace + 10  # the grace, then handing work back
    for probe in ("startupProbe", "livenessProbe"):
        check = container[probe]["exec"]["command"]
        assert check[:3] == ["cutor-spool", "workers", "--check"] and option(check, "--kind") == kind
    # One claim a pod: the spool mounted read-write from the one ReadWriteMany claim.
    (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    pvc = next(d for d in documents() if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_status_page_is_served_read_only_and_its_metrics_scraped() -> None:
    pod = deployment("cutor-spool-status")["spec"]["template"]["spec"]
    page, nginx = pod["containers"]
    assert page["command"][:3] == ["cutor-spool", "status-page", "--watch"]
    (status,) = [m for m in nginx["volumeMounts"] if m["name"] == "spool"]
    assert (status["subPath"], status["readOnly"]) == ("status", True)
    service = next(d for d in documents() if d["kind"] == "Service")
    assert service["metadata"]["annotations"]["prometheus.io/path"] == "/metrics.prom"


def test_every_command_line_is_accepted_by_the_cli() -> None:
    lines = [
        inv for argv in kubernetes_command_lines() + nomad_command_lines() for inv in cutor_spool_invocations(argv)
    ]
    assert len(lines) >= 12  # executor, builder, status page, init, their probes, Nomad's tasks and checks
    commands = set()
    for argv in lines:
        ctx = parse(argv)
        commands.add(ctx.info_name)
    assert {"executor", "builder", "status-page", "init", "workers"} <= commands


def test_a_drifted_option_fails_the_parse() -> None:
    with pytest.raises(click.UsageError):
        parse(["cutor-spool", "executor", "--grace-period", "30"])
    with pytest.raises(click.UsageError):
        parse(["cutor-spool", "workers", "--check", "--kind", "gateway"])


# -- Nomad -----------------------------------------------------------------------------------------
def test_the_nomad_job_is_a_service_on_one_multi_writer_volume() -> None:
    job = nomad_job()
    assert unquote(job["type"]) == "service"
    groups = blocks(job, "group")
    assert set(groups) == {"executor", "builder"}
    for name, group in groups.items():
        (volume,) = blocks(group, "volume").values()
        assert unquote(volume["access_mode"]) == "multi-node-multi-writer"
        assert volume["read_only"] is False
        (task,) = blocks(group, "task").values()
        assert unquote(task["driver"]) == "raw_exec" and unquote(task["user"]) == "root"
        (config,) = task["config"]
        args = unquote(config["args"])
        assert name in args
        assert float(unquote(task["kill_timeout"]).rstrip("s")) >= float(option(args, "--grace")) + 10
        (scaling,) = group["scaling"]
        assert scaling["min"] >= 1 and scaling["max"] > scaling["min"]


# -- the metrics the autoscalers query -------------------------------------------------------------
def autoscaler_queries() -> list[str]:
    queries = [
        t["metadata"]["query"] for d in documents() if d["kind"] == "ScaledObject" for t in d["spec"]["triggers"]
    ]
    for group in blocks(nomad_job(), "group").values():
        for policy in group["scaling"][0]["policy"]:
            queries += [unquote(check["query"]) for check in blocks(policy, "check").values()]
    return queries


def test_the_autoscalers_query_series_that_metrics_prom_has(tmp_path: Path) -> None:
    paths = SpoolPaths(tmp_path / "spool")
    paths.init()
    regenerate(paths, StatusPageConfig())
    text = (paths.status / "metrics.prom").read_text()
    queries = autoscaler_queries()
    hpa = next(d for d in documents() if d["kind"] == "HorizontalPodAutoscaler")
    assert len(queries) == 4
    for query in queries:
        (selector,) = re.findall(r"(cutor_spool_\w+)\{([^}]*)\}", query)
        metric, labels = selector
        for label, op, value in re.findall(r'(\w+)(=~|=)"([^"]*)"', labels):
            wanted = value.split("|") if op == "=~" else [value]
            for v in wanted:
                assert re.search(rf'^{metric}\{{[^}}]*{label}="{v}"', text, re.M), (metric, label, v)
    external = hpa["spec"]["metrics"][0]["external"]["metric"]
    assert f"\n{external['name']}{{" in text
    for expression in external["selector"]["matchExpressions"]:
        for v in expression["values"]:
            assert f'{expression["key"]}="{v}"' in text
