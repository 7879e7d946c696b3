"""`hpcrepro image build`: NVIDIA's training image from its published code (docs/image.md).

Only typer and the standard library load here; the image package is imported inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from hpcrepro.rounds import listing

image_app = typer.Typer(
    help="Build NVIDIA's training image (its code on the NGC base) for pyxis or Apptainer.",
    no_args_is_help=True,
)


@image_app.command("build")
def build(
    system: str = typer.Option(..., "--system", "-s", help="system name from `hpcrepro systems`"),
    version: str = typer.Option(..., "--version", "-r", help=f"MLPerf round: {listing()}"),
    site: Path | None = typer.Option(None, "--site", help="site YAML (else $HPCREPRO_SITE)"),
    overrides: list[str] = typer.Option([], "--set", help="KEY=VALUE, overrides any setting"),
    code: Path | None = typer.Option(
        None, "--code", help="offline copy of NVIDIA's implementation folder (else fetched)"
    ),
    builder: str | None = typer.Option(
        None, "--builder", help="enroot, apptainer, podman or docker (default: first found)"
    ),
    base: str | None = typer.Option(
        None,
        "--base",
        help="base image instead of the entry's container_base (a registry "
        "mirror, a .sqsh or .sif file, a podman image name)",
    ),
    dockerfile: Path | None = typer.Option(
        None, "--dockerfile", help="your own Dockerfile instead of NVIDIA's (code still checked)"
    ),
    wheels: Path | None = typer.Option(
        None, "--wheels", help="folder with mlperf-logging / mlperf-common wheels or sources"
    ),
    output_format: str | None = typer.Option(
        None, "--format", help="sqsh (pyxis) or sif (Apptainer); default from the site runtime"
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="image file (default: the site's image cache)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, build nothing"),
    no_site: bool = typer.Option(
        False, "--no-site", help="read no site file (the campaign's image stage passes all)"
    ),
) -> None:
    """Build (or reuse) NVIDIA's image of one catalog entry; prints the image file."""
    from hpcrepro.catalog import load_catalog
    from hpcrepro.config import find_site_file, resolve
    from hpcrepro.image import build as image_build

    site_settings = None
    if not no_site and (find_site_file(site) is not None or overrides):
        cfg = resolve(system, version, site, overrides)
        entry, site_settings = cfg.spec, cfg.site
    else:
        entry = load_catalog().get(system, version)
    request = image_build.request_for(
        system,
        version,
        entry,
        site_settings,
        output_format=output_format,
        builder=builder,
        code=code,
        base=base,
        dockerfile=dockerfile,
        wheels=wheels,
    )
    built = image_build.plan(request)
    if output is not None:
        target = output.expanduser().absolute()
    elif site_settings is not None:
        target = built.cache_file(site_settings)
    else:
        target = Path.cwd() / built.file_name()
    if dry_run:
        chosen = image_build.choose_builder(request.builder, request.output_format)
        for line in (
            f"code: {built.location.label}",
            f"base: {built.base}",
            f"dockerfile: {request.dockerfile or 'NVIDIA Dockerfile'}",
            f"builder: {chosen}",
            f"key: {built.key}",
            f"image: {target}" + (" (exists)" if target.is_file() else ""),
        ):
            typer.echo(line)
        return
    path, fresh = image_build.build(built, target)
    if not fresh:
        typer.echo(f"hpcrepro: {path} is already built from this recipe", err=True)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add `image build`."""
    app.add_typer(image_app, name="image")
