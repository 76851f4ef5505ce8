"""Batch engines' job scripts for pilot workers (Slurm): rendered from the operator's choices, importing no part."""
