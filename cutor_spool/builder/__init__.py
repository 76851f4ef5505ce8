"""Nix dependency environments (DESIGN sections 3 and 6; decisions in docs/nix.md).

keys.py          what determines an environment, and its key
nixpkgs.py       the pinned nixpkgs of spool.yaml and its identity
nixcmd.py        Nix command lines, built by small pure functions
process.py       running Nix with a time, memory and log limit
build.py         one build: evaluate (restricted), build, print the env script, measure
cache.py         the signed binary cache inside the spool, for executors with another store
requests.py      asking for a build and waiting for it (the executor's side of builds/)
environments.py  the executor's dependencies stage (pipeline.Environments)
worker.py        `cutor-spool builder`: claims builds/incoming/<key> like submissions
inventory.py     what is cached and who used it (`cutor-spool packages`)
gc.py            eviction and store collection (`cutor-spool gc`)
"""
