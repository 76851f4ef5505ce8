"""The data behind the front page's search: every result, as rows of values, in script files.

The page is static files, opened from disk or a plain web server, so the search runs in the browser
(page.js) over data the generator wrote next to the pages: `history/<n>.js` holds the rows of
`history/<n>.html` (PAGE_SIZE results, oldest first) and is written whenever that page is, so a
submission that finishes rewrites only the last, small file. Scripts, not JSON: a page opened
from file:// may load a script but not fetch a file. The content is JSON (escaped by `json.dumps`,
ASCII only) wrapped in one push; nothing a submission controls is ever code.

Without JavaScript the front page is a plain table of the recent results, and the history pages
list every result.
"""

from __future__ import annotations

import json
from typing import Any

# The columns of a row, in order; the front page gives them to page.js (#result-files).
ROW_KEYS = (
    "name",
    "state",
    "outcome",
    "score",
    "max_score",
    "tests",
    "cpu_time",
    "wall_time",
    "memory",
    "host",
    "queue_wait",
    "finished",
    "message",
)


def chunk(number: int, rows: list[dict[str, Any]]) -> bytes:
    data = [[row.get(key) for key in ROW_KEYS] for row in rows]
    body = json.dumps([number, data], ensure_ascii=True, separators=(",", ":"))
    return f"(window.cutorSpoolRows = window.cutorSpoolRows || []).push({body});\n".encode()
