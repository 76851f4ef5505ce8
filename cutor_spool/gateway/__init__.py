"""The HTTP gateway of deployments: `POST /{cid}` in, an invocation in the spool, its answer out (docs/gateway.md)."""
