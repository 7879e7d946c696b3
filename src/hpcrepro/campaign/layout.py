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

from hpcrepro.campaign import folder
from hpcrepro.campaign.state import NAME, Stage
from hpcrepro.errors import UserError

_PATH_MAX = 4096  # Linux PATH_MAX: an index entry longer than this cannot name a folder
_RESUBMIT = (
    "hpcrepro writes the campaign's scripts itself, so this one was changed by hand: "
    "submit the campaign again under a new name (`hpcrepro submit ... --name NEW`)"
)


class HalfMade(UserError):
    """A registered campaign whose submit stopped before the campaign folder was complete (or
    that another process is submitting right now): nothing of it was submitted."""

    def __init__(self, name: str, root: Path, left: list[Path], busy: bool) -> None:
        self.name, self.root, self.leftovers, self.busy = name, root, left, busy
        if busy:
            super().__init__(
                f"campaign {name} is being submitted right now by another hpcrepro process",
                hint=f"wait, then `hpcrepro status {name}`",
            )
            return
        super().__init__(
            f"campaign {name} is half-made: its submit was interrupted before any job was "
            f"submitted, leaving {left[0]}" + (f" (and {len(left) - 1} more)" if left[1:] else ""),
            hint=f"`hpcrepro resume {name}` finishes the submit, `hpcrepro cancel {name}` "
            "removes what it left",
        )


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
        for path in (self.root, self.scripts, self.logs, self.job_output, self.results):
            path.mkdir(parents=True, exist_ok=True)

    def job_files(self, stage: str, job_id: str) -> tuple[Path, Path]:
        """The output and exit-status files of a local job (`jobs/STAGE-ID.out`, `.exit`): made
        from a stage name and job id the manifest's shape check allows, never read from it."""
        output = self.job_output / f"{stage}-{job_id.replace(':', '_')}.out"
        return output, output.with_suffix(".exit")

    def stage_script(self, stage: Stage) -> Path:
        """The script of `stage`, which a scheduler is about to run: `scripts/STAGE.sbatch` (the
        manifest's check allows nothing else), a regular file of this user reached through no
        link."""
        script = self.root / stage.script
        try:
            folder = os.lstat(self.scripts)
            info = os.lstat(script)
        except OSError as error:
            raise UserError(
                f"the script of stage {stage.name} cannot be read ({error.strerror or error})",
                where=str(script),
                hint=_RESUBMIT,
            ) from None
        problem = (
            "scripts/ is not a folder (a link?)"
            if not stat.S_ISDIR(folder.st_mode)
            else "it is a link"
            if stat.S_ISLNK(info.st_mode)
            else "it is not a regular file"
            if not stat.S_ISREG(info.st_mode)
            else "it belongs to another user"
            if info.st_uid != os.geteuid()
            else None
        )
        if problem:
            raise UserError(
                f"refusing to run the script of stage {stage.name}: {problem}",
                where=str(script),
                hint=_RESUBMIT,
            )
        return script


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


class Claim:
    """The name of a campaign being submitted, held under the name's index lock."""

    def __init__(self, entry: Path, root: Path, previous: Path | None) -> None:
        self.entry, self.root, self.previous = entry, root, previous
        self.recorded = self.kept = False

    def record(self) -> None:
        """Write the index entry: from now on `status NAME` finds the campaign, or what an
        interrupted submit of it left (see `HalfMade`)."""
        _write_entry(self.entry, f"{self.root}\n")
        self.recorded = True

    def keep(self) -> None:
        """The campaign's manifest is in place: the entry stays, whatever happens next."""
        self.kept = True

    def take_back(self) -> None:
        if not self.recorded or self.kept:
            return
        with contextlib.suppress(OSError):
            if self.previous is None:
                self.entry.unlink()
            else:
                _write_entry(self.entry, f"{self.previous}\n")
        self.recorded = False


def name_lock(name: str) -> Path:
    return index_dir() / f".{name}.lock"


@contextlib.contextmanager
def claiming(name: str, root: Path) -> Iterator[Claim]:
    """Hold campaign `name` for `root` while a submit builds it, refusing a name that another
    folder's campaign holds (complete or half-made).

    The check and the entry happen under `<index>/.NAME.lock` (an O_EXCL marker file, safe on
    NFS), held until the body ends: two submits of one name from two log folders cannot both
    pass the check, and a second submit of the same campaign waits and then finds it. When the
    body fails, the entry it recorded is taken back.
    """
    from hpcrepro.campaign import manifest as manifest_io

    index = index_dir()
    try:
        index.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot make the campaign index folder ({error.strerror or error})",
            where=str(index),
            hint="set $HPCREPRO_STATE_DIR to a folder you may write",
        ) from error
    entry = index / name
    root = root.resolve()
    with manifest_io.locked(name_lock(name)):
        previous = None
        if os.path.lexists(entry):
            known = read_entry(entry)
            if known != root:
                try:
                    taken = _has_manifest(known) or bool(folder.leftovers(known))
                except OSError:
                    taken = False  # a folder that cannot be reached holds no campaign to protect
                if taken:
                    raise UserError(
                        f"a campaign named '{name}' already exists in {known}",
                        hint="choose another name with --name, or `hpcrepro status " + name + "`",
                    )
            previous = known
        claim = Claim(entry, root, previous)
        try:
            yield claim
        except BaseException:
            claim.take_back()
            raise


def forget(name: str, root: Path) -> None:
    """Remove the index entry of `name` if it still names `root`."""
    entry = index_dir() / name
    with contextlib.suppress(OSError, UserError):
        if read_entry(entry) == root:
            entry.unlink()


def _write_entry(entry: Path, text: str) -> None:
    from hpcrepro.safeopen import replace_inside

    replace_inside(entry.parent, entry.name, text.encode())


def half_made(name: str, root: Path) -> HalfMade | None:
    """What an interrupted (or running) submit of `name` left, None when nothing: the index
    entry then names a campaign folder that was deleted."""
    from hpcrepro.campaign import manifest as manifest_io

    left = folder.leftovers(root)
    with manifest_io.try_locked(name_lock(name)) as free:
        busy = not free
    return HalfMade(name, root, left, busy) if left or busy else None


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
        raise UserError(
            f"the campaign index cannot be read ({error.strerror or error})",
            where=str(index),
            hint="make it a folder you may read",
        ) from error
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
        elif on_damaged is not None and (unfinished := half_made(entry.name, root)):
            on_damaged(entry.name, unfinished)
    return found


def folder_of(name: str) -> Path | None:
    """The folder of the registered campaign `name`, None when no campaign has that name (a
    damaged index entry of that name is a UserError naming it, a half-made one `HalfMade`)."""
    if not NAME.fullmatch(name) or not os.path.lexists(index_dir() / name):
        return None
    root = read_entry(index_dir() / name)
    try:
        if _has_manifest(root):
            return root
    except OSError:
        return None
    unfinished = half_made(name, root)
    if unfinished is not None:
        raise unfinished
    return None


def find(campaign: str) -> CampaignPaths:
    """A campaign given by name (from the index) or by the path of its folder."""
    as_path = Path(campaign)
    if folder.is_leftover(as_path):
        raise UserError(
            f"{as_path} is what an interrupted submit left, not a campaign",
            hint="name the campaign instead: `hpcrepro resume NAME` finishes it",
        )
    with contextlib.suppress(OSError):  # e.g. a name too long to be a path
        if _has_manifest(as_path):
            return CampaignPaths(as_path.resolve())
    registered = folder_of(campaign)  # a damaged or half-made entry of that name: says so
    if registered is not None:
        return CampaignPaths(registered)
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
