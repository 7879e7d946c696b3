"""Read a site's extra sbatch/srun options the way Slurm's getopt_long reads them.

Site files may add options to every job (`sbatch_args`) and every step (`srun_args`). Each entry
must be one whole option: getopt takes a long option's unambiguous prefix (`--dep` is
`--dependency`), reads `-vWd...` as a cluster of short options, and a token that is not an option
ends the options, so `[bash, -c, id]` in srun_args would become the command every step runs.
`check` resolves each entry exactly as Slurm would and refuses what hpcrepro must control.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hpcrepro.errors import UserError
from hpcrepro.slurm_options import SBATCH_LONG, SBATCH_SHORT, SRUN_LONG, SRUN_SHORT


@dataclass(frozen=True)
class Command:
    """One Slurm command's option table and what a site may not set in it (option -> reason)."""

    name: str
    key: str  # the site key holding its extra options
    long: Mapping[str, str]
    short: Mapping[str, str]
    refused: Mapping[str, str]


_CHAIN = "it changes how sbatch submits or how hpcrepro chains the jobs"
_SHAPE = "hpcrepro sizes every step itself from the system's node and GPU counts"
SBATCH = Command(
    "sbatch",
    "sbatch_args",
    SBATCH_LONG,
    SBATCH_SHORT,
    {
        "wait": _CHAIN,
        "test-only": _CHAIN,
        "parsable": _CHAIN,
        "array": _CHAIN,
        "dependency": _CHAIN,
        "wrap": _CHAIN,
        "help": _CHAIN,
        "usage": _CHAIN,
        "version": _CHAIN,
        "export": "the runs get only the job script's own environment (--export=NONE)",
        "export-file": "the runs get only the job script's own environment (--export=NONE)",
        "requeue": "a requeued run restarts its log and is void for MLPerf",
    },
)
SRUN = Command(
    "srun",
    "srun_args",
    SRUN_LONG,
    SRUN_SHORT,
    {
        "nodes": _SHAPE,
        "ntasks": _SHAPE,
        "ntasks-per-node": _SHAPE,
        "mpi": "set the site key 'mpi' instead",
        "export": "every step passes the job script's environment on (SLURM_EXPORT_ENV=ALL)",
        "multi-prog": "it replaces the command of the step",
        "pty": "steps of a batch job have no terminal",
        "jobid": "steps run inside their own job",
        "test-only": "it keeps the step from running",
        "help": "it keeps the step from running",
        "usage": "it keeps the step from running",
        "version": "it keeps the step from running",
    },
)
_CONTAINER_REASON = (
    "hpcrepro gives pyxis the container options itself (site keys image, mounts, workdir)"
)


def _refuse(command: Command, entry: str, problem: str, hint: str) -> UserError:
    return UserError(
        f"{command.key} entry {entry!r}: {problem}", where=f"site key '{command.key}'", hint=hint
    )


def _long_name(command: Command, entry: str, written: str) -> str:
    """The option `--written` names: itself, or the one option it is a prefix of."""
    if written in command.long:
        return written
    if written.startswith("container"):
        return written  # pyxis adds its options to Slurm's at run time
    matches = [name for name in command.long if name.startswith(written)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise _refuse(
            command,
            entry,
            f"'--{written}' is ambiguous for {command.name} ({', '.join(sorted(matches)[:6])})",
            "write the option's full name",
        )
    close = difflib.get_close_matches(written, list(command.long), n=3)
    raise _refuse(
        command,
        entry,
        f"{command.name} has no option '--{written}'",
        (f"did you mean {', '.join('--' + c for c in close)}? " if close else "")
        + f"see `{command.name} --help`",
    )


def options_of(command: Command, entry: str) -> list[tuple[str, bool]]:
    """The long names of the options one entry sets, each with whether it is complete (False:
    it needs a value that the entry does not carry, so Slurm would take the next word).

    Refuses an entry that is no option (it would end the options and become the command).
    """
    if not entry.startswith("-") or entry == "-":
        raise _refuse(
            command,
            entry,
            "is not an option; Slurm would take it (and all that follows) as the command",
            "each entry is one option such as '--cpu-bind=none'; values go after '=' "
            "in the same entry",
        )
    if entry == "--":
        raise _refuse(command, entry, "ends the options", "remove it")
    if entry.startswith("--"):
        written, sep, _ = entry[2:].partition("=")
        name = _long_name(command, entry, written)
        return [(name, bool(sep) or command.long.get(name) != "required")]
    found: list[tuple[str, bool]] = []
    letters = entry[1:]
    for position, letter in enumerate(letters):
        long_name = command.short.get(letter)
        if long_name is None:
            raise _refuse(
                command, entry, f"{command.name} has no option '-{letter}'", "see its --help"
            )
        argument = command.long.get(long_name)
        if argument in ("required", "optional"):  # the rest of the entry is its value
            found.append((long_name, argument == "optional" or position + 1 < len(letters)))
            break
        found.append((long_name, True))
    return found


def check(command: Command, entries: Sequence[str]) -> list[str]:
    """The entries, unchanged, once each is known to be one option hpcrepro leaves to the site."""
    for entry in entries:
        for name, complete in options_of(command, entry):
            reason = _CONTAINER_REASON if name.startswith("container") else None
            reason = reason or command.refused.get(name)
            if reason:
                shown = "" if entry.startswith(f"--{name}") else f" (that is --{name})"
                raise _refuse(
                    command,
                    entry,
                    f"cannot be a site-wide {command.name} option{shown}: {reason}",
                    "remove it"
                    + (
                        "; `hpcrepro submit` sets job dependencies itself"
                        if "chains" in reason
                        else ""
                    ),
                )
            if not complete:
                raise _refuse(
                    command,
                    entry,
                    f"--{name} needs a value in the same entry; on its own it would take "
                    "hpcrepro's next word as its value",
                    f"write it as '--{name}=VALUE'",
                )
    return list(entries)


def sets_option(command: Command, entries: Sequence[str], option: str) -> bool:
    """Whether one of the (checked) entries sets `option` (a long name)."""
    return any(name == option for entry in entries for name, _ in options_of(command, entry))
