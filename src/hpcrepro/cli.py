"""The `hpcrepro` command line.

Each area of the tool registers its commands from `hpcrepro.commands.<area>`. Those modules import
only typer at load time and defer heavy imports (pydantic, pandas, matplotlib, torch,
mlperf-logging) into the command bodies, so `hpcrepro --help` and `hpcrepro status` start fast.
"""

from __future__ import annotations

import importlib
import os
import sys

# Plain help text for every command: typer's rich help formatter alone costs ~0.15 s of start-up
# (rich is still used for tables and live displays, imported where they are drawn).
os.environ.setdefault("TYPER_USE_RICH", "0")

import typer

from hpcrepro.errors import USER_ERROR_EXIT, UserError

# One module per area; each defines `register(app)`.
COMMAND_MODULES = (
    "hpcrepro.commands.core",
    "hpcrepro.commands.campaign",
    "hpcrepro.commands.results",
    "hpcrepro.commands.prep",
    "hpcrepro.commands.workload",
    "hpcrepro.commands.detect",
    "hpcrepro.commands.systems",
    "hpcrepro.commands.image",
    "hpcrepro.commands.site",
)

app = typer.Typer(
    name="hpcrepro",
    help="Reproduce NVIDIA's MLPerf Training ResNet-50 results on a Slurm cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
)


def _print_version(wanted: bool) -> None:
    if wanted:
        from hpcrepro import __version__

        typer.echo(f"hpcrepro {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    show_version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print hpcrepro's version and exit (a command's --version is the MLPerf round).",
    ),
) -> None:
    """Reproduce NVIDIA's MLPerf Training ResNet-50 results on a Slurm cluster."""

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def print_user_error(error: UserError) -> None:
    """Print a user mistake to stderr as 'error: ...' plus a hint line."""
    text = error.render().splitlines()
    sys.stderr.write(f"error: {text[0]}\n")
    for line in text[1:]:
        sys.stderr.write(f"  {line}\n")


INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report it


def main() -> None:
    try:
        # one name however it was started (`python -m hpcrepro` too): usage lines and the
        # completion's variable (_HPCREPRO_COMPLETE) are those of the installed command
        app(prog_name="hpcrepro")
    except UserError as error:
        print_user_error(error)
        sys.exit(USER_ERROR_EXIT)
    except SystemExit as done:
        if done.code == INTERRUPTED_EXIT:  # typer turns Ctrl-C into this exit without a word
            sys.stderr.write("interrupted\n")
        raise
