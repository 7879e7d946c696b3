"""Every catalog number has a sane upper bound, and a system file that YAML or Python cannot read
(a 4,301-digit number, a date like 2024-13-45, a NUL byte) is a UserError naming file and line.

Before, `--set hparams.NUMEPOCHS=999999999999` ended in a MemoryError (the list of evaluation
epochs) and a number beyond Python's int-string limit in a traceback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hpcrepro import catalog
from hpcrepro.catalog import Hyperparameters, SystemVersion, load_catalog
from hpcrepro.errors import UserError

SHIPPED = Path(__file__).resolve().parent.parent / "systems"
SYSTEM = "dgxh100_1x8"


def user_folder(tmp_path: Path, edit: tuple[str, str] | None = None, raw: bytes = b"") -> Path:
    """A $HPCREPRO_SYSTEMS folder whose dgxh100_1x8.yaml has one line replaced (or bytes added)."""
    folder = tmp_path / "systems"
    folder.mkdir()
    text = (SHIPPED / f"{SYSTEM}.yaml").read_text()
    if edit is not None:
        assert edit[0] in text
        text = text.replace(edit[0], edit[1], 1)
    (folder / f"{SYSTEM}.yaml").write_bytes(text.encode() + raw)
    return folder


def line_of(folder: Path, needle: str) -> int:
    lines = (folder / f"{SYSTEM}.yaml").read_text(errors="replace").splitlines()
    return next(number for number, line in enumerate(lines, 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        ("NUMEPOCHS: 37", "NUMEPOCHS: 999999999999", ["less than or equal to 1000"]),
        ("NUMEPOCHS: 37", "NUMEPOCHS: " + "9" * 4301, ["4301 digits, more than the 4300"]),
        ("EVAL_PERIOD: 4", "EVAL_PERIOD: 0x7fffffffffffffff", ["less than or equal to 1000"]),
        ("minutes_per_run: 20", "minutes_per_run: 1.0e+308", ["less than or equal to 10080"]),
        ("minutes_per_run: 20", "minutes_per_run: .inf", ["finite"]),
        ("walltime_overhead_minutes: 5", "walltime_overhead_minutes: 1e308", ["10080"]),
        ("score_minutes: 14.746", "score_minutes: 1.0e+300", ["10080"]),
        ("LR: 11.0", "LR: 1.0e+300", ["less than or equal to 1000"]),
        ("MOM: 0.9", "MOM: 90", ["less than or equal to 1"]),
        ("nodes: 1", "nodes: 2024-13-45", ["cannot read '2024-13-45' as a date", "month"]),
        ("nodes: 1", "nodes: !!int abc", ["cannot read 'abc' as an integer"]),
        ("nodes: 1", "nodes: !!bool maybe", ["as true or false"]),
        ("nodes: 1", "nodes: -0x_", ["as an integer"]),
        ("nodes: 1", "nodes: 1\x00", ["holds a NUL byte"]),
        ("nodes: 1", "nodes: 1\x1b[2J", ["control character (U+001B)"]),
    ],
)
def test_a_hostile_system_file_names_file_line_and_problem(
    tmp_path: Path, old: str, new: str, fragments: list[str]
) -> None:
    folder = user_folder(tmp_path, (old, new))
    with pytest.raises(UserError) as raised:
        load_catalog(extra=[folder]).get(SYSTEM, "r2.1")
    shown = raised.value.render()
    assert f"{folder / SYSTEM}.yaml:{line_of(folder, new.split(':')[0] + ':')}" in shown, shown
    for fragment in fragments:
        assert fragment in shown, (fragment, shown)
    assert len(shown) < 2000  # a 4301-digit value is not printed whole


def test_every_number_field_has_an_upper_bound() -> None:
    """No int or float field of the catalog's models is left without `le` or `lt`."""
    for model in (SystemVersion, Hyperparameters, catalog.Published):
        for name, info in model.model_fields.items():
            kinds = {info.annotation} | set(getattr(info.annotation, "__args__", ()))
            if not kinds & {int, float}:
                continue
            bounds = [m for m in info.metadata if hasattr(m, "le") or hasattr(m, "lt")]
            assert bounds, f"{model.__name__}.{name} has no upper bound"


def test_the_shipped_catalog_is_within_the_bounds(tmp_path: Path) -> None:
    """The bounds leave room above every NVIDIA value (the largest: 527 nodes, NUMEPOCHS 90)."""
    copy = tmp_path / "copy"
    shutil.copytree(SHIPPED, copy)
    loaded = load_catalog(copy)
    assert len(loaded.names()) >= 10
