"""The JSON Schemas of the spool's documents, for clients in other languages to validate against.

`cutor-spool schema NAME` prints one. They describe what a reader may rely on: the fields and
their types as this version writes them, with additional properties allowed, because a newer
writer may add fields (see `base.py`). Draft 2020-12, as pydantic generates it.
"""

from __future__ import annotations

from typing import Any

from cutor_spool.documents.base import Document
from cutor_spool.documents.build import BuildRecord
from cutor_spool.documents.dependencies import DependenciesDocument
from cutor_spool.documents.deployment import DeploymentBuild, DeploymentSpec, InvocationRequest, Response
from cutor_spool.documents.heartbeat import Heartbeat
from cutor_spool.documents.stage import StageDocument
from cutor_spool.documents.status import StatusDocument

DRAFT = "https://json-schema.org/draft/2020-12/schema"

DOCUMENTS: dict[str, tuple[type[Document], str]] = {
    "status": (StatusDocument, "result/status.json"),
    "stage": (StageDocument, "result/<stage>.json and result/tests/<name>.json"),
    "dependencies": (DependenciesDocument, "result/dependencies.json"),
    "heartbeat": (Heartbeat, "workers/<worker-id>.json"),
    "build": (BuildRecord, "builds/done/<key>/result.json"),
    "deployment": (DeploymentSpec, "cas/…/<cid>: a deployment's spec.json"),
    "deployment-build": (DeploymentBuild, "deployments/<cid>/build.json"),
    "invocation": (InvocationRequest, "invocations/incoming/<id>/request.json"),
    "response": (Response, "invocations/done/<id>/result/response.json"),
}


def _open(node: Any) -> Any:
    """The schema with every `additionalProperties: false` taken out (readers tolerate new fields)."""
    if isinstance(node, dict):
        return {k: _open(v) for k, v in node.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [_open(v) for v in node]
    return node


def document_schema(name: str) -> dict[str, Any]:
    model, where = DOCUMENTS[name]
    schema = _open(model.model_json_schema())
    return {"$schema": DRAFT, "$id": f"cutor-spool:{name}", "description": f"cutor-spool's {where}", **schema}
