"""Read a JSON file a user can hand us (or damage) with one clear error for every way it fails.

Every reader of campaign, detect, prep and results files needs the same answers: a missing or
unreadable file, bytes that are not UTF-8, invalid JSON (with its line), and nesting deeper than
`json` can recurse (a RecursionError, not a ValueError) are user errors naming the file; a FIFO
or a device is refused rather than read forever.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpcrepro.errors import UserError, location
from hpcrepro.safeopen import read_user_file

# Far above any file hpcrepro writes or reads (campaign manifests of 99 runs are ~100 kB).
MAX_BYTES = 64 << 20


def read_json(path: Path, hint: str | None = None) -> Any:
    """The decoded content of `path`; UserError (file, line, reason, `hint`) when unusable."""
    text = read_user_file(path, MAX_BYTES, hint)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"invalid JSON: {error.msg}",
                        where=location(str(path), line=error.lineno), hint=hint) from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise UserError(f"invalid JSON: {str(error).split('; use sys.')[0]}", where=str(path),
                        hint=hint) from None
    except RecursionError:
        raise UserError("JSON nested too deeply to read", where=str(path), hint=hint) from None
