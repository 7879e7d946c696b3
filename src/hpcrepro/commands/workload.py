"""`hpcrepro demo`: the reference workload end to end on this machine (hpcrepro.workload.demo)."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    directory: Path = typer.Option(
        Path("hpcrepro-demo"), "--dir", "-d", help="Folder for the demo's data, configs and logs."
    ),
    # 99: what `hpcrepro submit` accepts (hpcrepro.site.MAX_RUNS; a test keeps them equal).
    runs: int = typer.Option(
        5, "--runs", min=1, max=99, help="Training runs, 1-99 (MLPerf scores 5)."
    ),
) -> None:
    """Synthetic data -> prep -> training runs with the local backend -> collected report."""
    from hpcrepro.workload.demo import run_demo

    run_demo(directory, runs, say=typer.echo)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("demo")(demo)
