"""Deployments on the executor: their builds and invocations (a third queue, docs/deployments.md)."""
