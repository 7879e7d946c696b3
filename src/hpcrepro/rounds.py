"""The MLPerf Training rounds that had ResNet-50: every fact of a round, in one table.

A round is known by the catalog's version key (`r3.0`). Its logs are checked against one
mlperf-logging ruleset (`3.0.0`), and NVIDIA's code of it sits in one MLCommons results repository
at the commit hpcrepro's per-file records (`hpcrepro/image/published/v3.0.json`, written by
`scripts/image-code-manifests.py`) were made from. ResNet-50 was retired after v4.0: no later
round has ResNet rules, so a later version is refused, not guessed.

The container base is not a round fact: entries of one round use different NGC images (r2.1 has
22.04 and 23.04, r4.0 23.04 and 24.04), so it stays with each catalog entry (`container_base`).
Standard library only: command help texts and `hpcrepro status` read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hpcrepro.errors import UserError

# The eval_accuracy a ResNet-50 run must reach (top-1 on ImageNet's validation set), the same in
# every round from v0.7 to v4.0.
TARGET_ACCURACY = 0.759


@dataclass(frozen=True)
class Round:
    name: str  # r3.0: the catalog's version key
    ruleset: str  # 3.0.0: mlperf-logging's --ruleset
    results_commit: str  # the commit of the results repository that NVIDIA's code is read from

    @property
    def results_round(self) -> str:
        """v3.0: the round as MLCommons names its repositories."""
        return "v" + self.name.removeprefix("r")

    @property
    def results_repository(self) -> str:
        return f"mlcommons/training_results_{self.results_round}"


ROUNDS: dict[str, Round] = {
    item.name: item
    for item in (
        Round("r2.1", "2.1.0", "158189d4cbfbee366c10da1f0f086c85d8f15b5f"),
        Round("r3.0", "3.0.0", "63e326c400f5d8bb8c6070a9ab08332d4931152e"),
        Round("r3.1", "3.1.0", "d06288b2bd675a9d88e0e6181f5bb5626b71ec19"),
        Round("r4.0", "4.0.0", "6fe954378efe4a1a1bd665550b18ff8f26018def"),
    )
}
VERSIONS = tuple(ROUNDS)
RULESETS = tuple(item.ruleset for item in ROUNDS.values())
LAST = VERSIONS[-1]  # ResNet-50 was retired after this round
_VERSION = re.compile(r"^[rv]?(\d+)\.(\d+)(?:\.(\d+))?$")


def listing(last: str = ", ") -> str:
    """'r2.1, r3.0, r3.1, r4.0' (or '... or r4.0' with last=' or ') for help texts and hints."""
    return ", ".join(VERSIONS[:-1]) + last + VERSIONS[-1]


def get(version: str, where: str = "--version") -> Round:
    """The round of a version key ('r4.0'); a UserError naming the known ones otherwise."""
    found = ROUNDS.get(version)
    if found is None:
        raise UserError(
            f"'{version}' is not an MLPerf round with ResNet-50",
            where=where,
            hint=f"use {listing(' or ')}",
        )
    return found


def ruleset_for(version: str, where: str = "--version") -> str:
    """'r4.0', 'v4.0', '4.0' or '4.0.0' -> '4.0.0'; a round without ResNet is refused."""
    match = _VERSION.match(version.strip())
    if not match:
        raise UserError(
            f"'{version}' is not an MLPerf Training version",
            where=where,
            hint=f"use {listing(' or ')}",
        )
    ruleset = f"{match[1]}.{match[2]}.{match[3] or 0}"
    if ruleset not in RULESETS:
        raise UserError(
            f"MLPerf Training {version} has no ResNet-50 rules",
            where=where,
            hint=f"ResNet-50 was retired after {ROUNDS[LAST].results_round}; use {listing(' or ')}",
        )
    return ruleset


def of_ruleset(ruleset: str) -> Round:
    """The round whose rules `ruleset` ('3.1.0') is."""
    return next(item for item in ROUNDS.values() if item.ruleset == ruleset)
