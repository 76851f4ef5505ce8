# cutor-spool's Python dependencies (pyproject.toml's `dependencies`), as nixpkgs names them.
ps: with ps; [
  click
  pydantic
  pyyaml
  watchdog
  filelock
  docker
  jinja2
  pynacl
]
