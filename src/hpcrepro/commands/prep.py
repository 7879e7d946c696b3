"""`hpcrepro prep`: ImageNet → MXNet RecordIO (imagenet) and its check (verify).

Only typer and the standard library load here; the prep package is imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hpcrepro.errors import UserError

prep_app = typer.Typer(
    help="Build and check the ImageNet RecordIO files NVIDIA's ResNet-50 reads.",
    no_args_is_help=True,
)


@prep_app.command("imagenet")
def imagenet(
    raw: Path = typer.Option(
        ..., "--raw", help="Folder with train/ and val/ or the ILSVRC2012 tars."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder for train/val .lst/.rec/.idx."),
    workers: int = typer.Option(0, "--workers", help="Reader threads (default: CPUs available)."),
    shard: str = typer.Option("", "--shard", help="Pack only shard I/N (a Slurm array task)."),
    join: bool = typer.Option(False, "--join", help="Join the packed shards and finish."),
    on_corrupt: str = typer.Option("fail", "--on-corrupt", help="fail or skip corrupt images."),
    val_labels: Path = typer.Option(None, "--val-labels", help="Labels for flat val images."),
    restart: bool = typer.Option(False, "--restart", help="Discard a partial prep in --out."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the summary as one JSON document; no progress bars."
    ),
) -> None:
    """Convert ImageNet to train/val .rec/.idx exactly as im2rec.py --pass-through does.

    On a terminal, a bar per split shows images, bytes, rate and ETA on stderr."""
    from hpcrepro.prep.imagenet import Request, default_workers, prepare
    from hpcrepro.prep.shards import parse_shard

    if on_corrupt not in ("fail", "skip"):
        raise UserError(f"--on-corrupt '{on_corrupt}' is not 'fail' or 'skip'")
    if shard and join:
        raise UserError("--shard and --join are separate steps", hint="run the shards, then --join")
    if restart and (shard or join):
        raise UserError(
            "--restart cannot be combined with --shard or --join (every array task would "
            "discard the others' work)",
            hint="delete OUT/.hpcrepro-prep once, then resubmit the array",
        )
    from hpcrepro.prep.slurm import MAX_WORKERS

    if not 0 <= workers <= MAX_WORKERS:
        raise UserError(
            f"--workers {workers} is out of range: give 1 to {MAX_WORKERS} reader threads",
            hint="or leave it out for one per CPU this job may use",
        )
    request = Request(
        raw=raw,
        out=out,
        workers=workers or default_workers(),
        val_labels=val_labels,
        on_corrupt=on_corrupt,
        shard=parse_shard(shard) if shard else None,
        join_only=join,
        restart=restart,
    )
    from hpcrepro.progress import Progress

    with Progress(enabled=False if as_json else None) as board:
        summary = prepare(request, log=board.line, board=board)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    typer.echo(f"{summary['status']}: " + summary.get("out", summary.get("shard", "")))
    for split, info in summary.get("splits", {}).items():
        typer.echo(
            f"{split}: {info['images']} images, {info['rec_bytes']} bytes, "
            f"{info['skipped']} skipped"
        )


@prep_app.command("verify")
def verify(
    folder: Path = typer.Argument(..., help="A folder made by 'hpcrepro prep imagenet'."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    deep: bool = typer.Option(False, "--checksums", help="Also read every byte: images, CRCs."),
    write_manifest: bool = typer.Option(
        False, "--write-manifest", help="Adopt a data set made elsewhere (e.g. by im2rec)."
    ),
) -> None:
    """Check counts, offsets, ids and labels (and with --checksums every byte)."""
    from hpcrepro.prep.imagenet import default_workers
    from hpcrepro.prep.verify import adopt
    from hpcrepro.prep.verify import verify as run_verify
    from hpcrepro.progress import Progress

    folder = folder.resolve()
    with Progress(enabled=False if as_json else None) as board:
        report = (
            adopt(folder)
            if write_manifest
            else run_verify(folder, deep=deep, workers=default_workers(), board=board)
        )
    if as_json:
        typer.echo(json.dumps(report, indent=1, sort_keys=True))
    else:
        for split, info in report["splits"].items():
            typer.echo(
                f"{split}: {info['records']} records of {info['listed']} listed, "
                f"{info['classes']} classes, {info['rec_bytes']} bytes, {info['skipped']} skipped"
            )
        typer.echo(
            "full ImageNet-1k counts (1,281,167 / 50,000, 1000 classes): "
            + ("yes" if report["full_imagenet"] else "no")
        )
        typer.echo("manifest: " + ("present" if report["manifest"] else "missing"))
    if not report["ok"]:
        raise UserError(
            f"{folder} failed verification:\n" + "\n".join(report["problems"]),
            hint="rerun 'hpcrepro prep imagenet' for this folder (use --restart to start over)",
        )
    if not as_json:
        typer.echo("ok")


def register(app: typer.Typer) -> None:
    """Add `hpcrepro prep ...` to the main app."""
    app.add_typer(prep_app, name="prep")
