"""The rounds table: every fact of a round in one place, and the shipped code records agree."""

from __future__ import annotations

import json

import pytest

from hpcrepro import rounds
from hpcrepro.catalog import load_catalog
from hpcrepro.errors import UserError
from hpcrepro.image.published import DATA_DIR


def test_the_shipped_code_records_were_made_from_each_rounds_commit() -> None:
    for item in rounds.ROUNDS.values():
        data = json.loads((DATA_DIR / f"{item.results_round}.json").read_text())
        assert (data["round"], data["repository"], data["commit"]) == (
            item.results_round,
            item.results_repository,
            item.results_commit,
        )


def test_every_catalog_entry_checks_its_logs_with_its_rounds_rules() -> None:
    catalog = load_catalog()
    for name in catalog.names():
        for version, entry in catalog.systems[name].versions.items():
            assert entry.ruleset == rounds.get(version).ruleset, (name, version)


@pytest.mark.parametrize(
    ("text", "ruleset"),
    [("r4.0", "4.0.0"), ("v3.1", "3.1.0"), ("2.1", "2.1.0"), ("3.0.0", "3.0.0")],
)
def test_versions_are_read_in_every_spelling(text: str, ruleset: str) -> None:
    assert rounds.ruleset_for(text) == ruleset


def test_a_round_after_resnet_was_retired_is_refused_with_the_reason() -> None:
    with pytest.raises(UserError) as caught:
        rounds.ruleset_for("r5.0")
    assert "has no ResNet-50 rules" in caught.value.message
    assert caught.value.hint == "ResNet-50 was retired after v4.0; use r2.1, r3.0, r3.1 or r4.0"
    with pytest.raises(UserError, match="not an MLPerf round with ResNet-50"):
        rounds.get("r5.0")
