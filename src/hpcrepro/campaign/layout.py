"""Where a campaign keeps its files, and the index that lets `status` find every campaign.

A campaign lives in `<site log_dir>/<name>/`. A small index under the user's state folder
(`$HPCREPRO_STATE_DIR`, else `$XDG_STATE_HOME/hpcrepro`, else `~/.local/state/hpcrepro`) maps each
campaign name to that folder, so `hpcrepro status` needs neither the site file nor pydantic.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hpcrepro.errors import UserError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_PATH_MAX = 4096  # Linux PATH_MAX: an index entry longer than this cannot name a folder


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

    def run_log(self, index: int, job_id: str | None = None) -> Path:
        """The log of run `index`. The job names it `run-NN_<JOBID>_<DATESTAMP>.log`, so a job
        script submitted again never overwrites it: the log of job `job_id` when given (else the
        newest), `run-NN.log` for campaigns made before the names carried the job."""
        prefix = f"run-{index:02d}_"
        found = sorted(self.logs.glob(f"{glob.escape(prefix)}*.log"))
        if job_id is not None:
            own = [p for p in found if p.name.startswith(f"{prefix}{job_file_id(job_id)}_")]
            found = own or found
        return found[-1] if found else self.logs / f"run-{index:02d}.log"

    def make(self) -> None:
        for folder in (self.root, self.scripts, self.logs, self.job_output, self.results):
            folder.mkdir(parents=True, exist_ok=True)


def job_file_id(job_id: str) -> str:
    """A job id as it appears in file names (the local backend's ids hold ':')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
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


def read_entry(entry: Path) -> Path:
    """The campaign folder an index file names. A damaged index file (a folder, binary bytes, a
    huge file, no absolute path) is a UserError naming it, quoting at most a few characters."""

    def damaged(problem: str) -> UserError:
        return UserError(
            f"campaign index entry {problem}",
            where=str(entry),
            hint="the index is written by `hpcrepro submit`: delete this entry (its campaign "
            "folder is not touched), or write the campaign folder's absolute path into it",
        )

    try:
        if not stat.S_ISREG(entry.stat().st_mode):
            raise damaged("is not a plain file")
        with entry.open("rb") as handle:
            raw = handle.read(_PATH_MAX + 2)
    except OSError as error:
        raise damaged(f"cannot be read ({error.strerror or error})") from error
    try:
        text = raw.decode("utf-8").strip("\r\n")
    except UnicodeDecodeError as error:
        raise damaged("is not UTF-8 text") from error
    if len(raw) > _PATH_MAX + 1:
        raise damaged(f"is longer than a folder path can be ({_PATH_MAX} bytes)")
    if not text.startswith("/") or "\n" in text or "\0" in text:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise damaged(f"does not hold one absolute folder path (it holds {shown!r})")
    return Path(text)


@contextlib.contextmanager
def registering(name: str, root: Path) -> Iterator[None]:
    """Record that campaign `name` lives in `root`, refusing a name another folder's campaign
    holds, and keep the name's index lock until the body (which saves the manifest) ends.

    Check and record happen under `<index>/.NAME.lock` (an O_EXCL marker file, safe on NFS), and
    the lock is held until the new manifest exists: two submits of one name from two log folders
    cannot both pass the check. When the body fails, the entry it wrote is taken back.
    """
    from hpcrepro.campaign import manifest as manifest_io

    index = index_dir()
    try:
        index.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot make the campaign index folder ({error.strerror or error})",
                        where=str(index),
                        hint="set $HPCREPRO_STATE_DIR to a folder you may write") from error
    entry = index / name
    root = root.resolve()
    with manifest_io.locked(index / f".{name}.lock"):
        previous = None
        if os.path.lexists(entry):
            known = read_entry(entry)
            try:
                taken = known != root and _has_manifest(known)
            except OSError:
                taken = False  # a folder that cannot be reached holds no campaign to protect
            if taken:
                raise UserError(
                    f"a campaign named '{name}' already exists in {known}",
                    hint="choose another name with --name, or `hpcrepro status " + name + "`",
                )
            previous = known
        _write_entry(entry, f"{root}\n")
        try:
            yield
        except BaseException:
            with contextlib.suppress(OSError):
                if previous is None:
                    entry.unlink()
                else:
                    _write_entry(entry, f"{previous}\n")
            raise


def _write_entry(entry: Path, text: str) -> None:
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, entry)


def _has_manifest(root: Path) -> bool:
    """Whether `root` holds a campaign.json; OSError when that cannot be told (a path too long
    for the file system, a folder that may not be searched)."""
    return (root / "campaign.json").exists()


def known_campaigns(
    on_damaged: Callable[[str, UserError], None] | None = None,
) -> dict[str, Path]:
    """Every registered campaign whose folder still holds a manifest, by name. A damaged index
    entry is passed to `on_damaged` (name, error) and left out."""
    index = index_dir()
    if not index.is_dir():
        return {}
    try:
        entries = sorted(index.iterdir())
    except OSError as error:
        raise UserError(f"the campaign index cannot be read ({error.strerror or error})",
                        where=str(index), hint="make it a folder you may read") from error
    found: dict[str, Path] = {}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            root = read_entry(entry)
            try:
                present = _has_manifest(root)
            except OSError as error:
                raise UserError(
                    f"campaign index entry names a folder that cannot be reached "
                    f"({error.strerror or type(error).__name__})",
                    where=str(entry),
                ) from error
        except UserError as error:
            if on_damaged is not None:
                on_damaged(entry.name, error)
            continue
        if present:
            found[entry.name] = root
    return found


def folder_of(name: str) -> Path | None:
    """The folder of the registered campaign `name`, None when no campaign has that name (a
    damaged index entry of that name is a UserError naming it)."""
    if not NAME.fullmatch(name) or not os.path.lexists(index_dir() / name):
        return None
    root = read_entry(index_dir() / name)
    try:
        return root if _has_manifest(root) else None
    except OSError:
        return None


def find(campaign: str) -> CampaignPaths:
    """A campaign given by name (from the index) or by the path of its folder."""
    as_path = Path(campaign)
    with contextlib.suppress(OSError):  # e.g. a name too long to be a path
        if _has_manifest(as_path):
            return CampaignPaths(as_path.resolve())
    if NAME.fullmatch(campaign) and os.path.lexists(index_dir() / campaign):
        read_entry(index_dir() / campaign)  # a damaged entry of that name: say so
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
