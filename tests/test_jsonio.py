"""The shared JSON reader: every way a file can be unusable is a UserError naming it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from hpcrepro.errors import UserError
from hpcrepro.jsonio import read_json


@pytest.mark.parametrize(("content", "where", "message"), [
    (b'{"a": 1,\n "b": }', ":2", "invalid JSON: Expecting value"),
    (b'{"a": "caf\xe9"}', ":1", "not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "", "nested too deeply"),
    (b"9" * 5000, "", "Exceeds the limit (4300 digits)"),
])
def test_damaged_content(tmp_path: Path, content: bytes, where: str, message: str) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        read_json(path, hint="re-create it")
    assert caught.value.where == f"{path}{where}"
    assert caught.value.hint == "re-create it"
    assert "set_int_max_str_digits" not in caught.value.message


def test_missing_folder_and_fifo_are_refused_without_blocking(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="file not found"):
        read_json(tmp_path / "nope.json")
    with pytest.raises(UserError, match="a folder, not a regular file"):
        read_json(tmp_path)
    os.mkfifo(tmp_path / "fifo")  # no writer: a blocking open would wait forever
    with pytest.raises(UserError, match="a FIFO, not a regular file"):
        read_json(tmp_path / "fifo")
    with pytest.raises(UserError, match="a device, not a regular file"):
        read_json(Path("/dev/zero"))


def test_good_file(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"a": [1, 2.5, null]}')
    assert read_json(tmp_path / "x.json") == {"a": [1, 2.5, None]}
