"""The static status page: `status/` in the spool, rendered with jinja2 (DESIGN section 7).

`regenerate` brings it up to date (cheaply: see `index.py`); `StatusPageJob` is how workers call it,
throttled and in the background. Nothing here serves HTTP: point any static web server (or a
browser, with file://) at `status/`.
"""

from cutor_spool.web_status.generate import Report, regenerate
from cutor_spool.web_status.job import StatusPageJob

__all__ = ["Report", "StatusPageJob", "regenerate"]
