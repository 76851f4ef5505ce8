"""Sandboxes (bubblewrap by default, Docker) and stage execution: one interface, `Sandbox.run`,
takes a `StageSpec` and returns a `StageOutput` with an honest status, CPU time and peak memory."""
