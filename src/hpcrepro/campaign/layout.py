"""Where a campaign keeps its files, and the index that lets `status` find every campaign.

A campaign lives in `<site log_dir>/<name>/`. A small index under the user's state folder
(`$HPCREPRO_STATE_DIR`, else `$XDG_STATE_HOME/hpcrepro`, else `~/.local/state/hpcrepro`) maps each
campaign name to that folder, so `hpcrepro status` needs neither the site file nor pydantic.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from hpcrepro.errors import UserError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class CampaignPaths:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "campaign.json"

    @property
    def lock(self) -> Path:
        return self.root / ".campaign.lock"

    @property
    def scripts(self) -> Path:
        return self.root / "scripts"

    @property
    def logs(self) -> Path:
        """MLPerf logs, one per training run (run-NN.log)."""
        return self.root / "logs"

    @property
    def job_output(self) -> Path:
        """stdout/stderr of every job."""
        return self.root / "jobs"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def resolved_config(self) -> Path:
        return self.root / "resolved-config.json"

    def run_log(self, index: int) -> Path:
        return self.logs / f"run-{index:02d}.log"

    def make(self) -> None:
        for folder in (self.root, self.scripts, self.logs, self.job_output, self.results):
            folder.mkdir(parents=True, exist_ok=True)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UserError(
            f"'{name}' is not a usable campaign name",
            hint="use letters, digits, '.', '_' and '-' (at most 100), "
            "starting with a letter or digit",
        )
    return name


def state_dir() -> Path:
    explicit = os.environ.get("HPCREPRO_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "hpcrepro"


def index_dir() -> Path:
    return state_dir() / "campaigns"


def register(name: str, root: Path) -> None:
    """Record that campaign `name` lives in `root` (refuses a second campaign of that name)."""
    index = index_dir()
    index.mkdir(parents=True, exist_ok=True)
    entry = index / name
    root = root.resolve()
    if entry.exists():
        known = Path(entry.read_text().strip())
        if known != root and (known / "campaign.json").exists():
            raise UserError(
                f"a campaign named '{name}' already exists in {known}",
                hint="choose another name with --name, or `hpcrepro status " + name + "`",
            )
    tmp = entry.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.write_text(f"{root}\n")
    os.replace(tmp, entry)


def known_campaigns() -> dict[str, Path]:
    """Every registered campaign whose folder still holds a manifest, by name."""
    index = index_dir()
    if not index.is_dir():
        return {}
    found: dict[str, Path] = {}
    for entry in sorted(index.iterdir()):
        if entry.name.startswith("."):
            continue
        root = Path(entry.read_text().strip())
        if (root / "campaign.json").exists():
            found[entry.name] = root
    return found


def find(campaign: str) -> CampaignPaths:
    """A campaign given by name (from the index) or by the path of its folder."""
    as_path = Path(campaign)
    if (as_path / "campaign.json").exists():
        return CampaignPaths(as_path.resolve())
    known = known_campaigns()
    if campaign in known:
        return CampaignPaths(known[campaign])
    import difflib

    close = difflib.get_close_matches(campaign, list(known), n=3)
    hint = (
        f"did you mean {', '.join(close)}?"
        if close
        else ("known campaigns: " + ", ".join(known) if known else "no campaign submitted yet")
    )
    raise UserError(
        f"no campaign '{campaign}' (neither a known name nor a campaign folder)", hint=hint
    )
