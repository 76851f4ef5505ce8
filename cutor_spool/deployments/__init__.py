"""Deployments by content id (DESIGN section 9): the content store, its IPFS CIDs, CAR export, keys."""
