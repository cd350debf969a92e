"""Put the assets of a project.yml in place, verified by md5: from a local mirror first, then from their URLs.

The mirror has the layout of ``../shared/data``: the asset ``assets/<dataset>/<file>`` is ``<mirror>/<dataset>/<file>``.
It is the ``--mirror`` option, else project.yml's ``vars.data_mirror`` (relative to the project directory); the
environment variable ``MGKD_DATA_MIRROR`` overrides both. ``--offline`` (or ``MGKD_OFFLINE=1``) never touches the
network. Whatever cannot be supplied is listed in one message, and the command exits with status 1.
"""
import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import srsly
import typer
from wasabi import msg

MIRROR_ENV = "MGKD_DATA_MIRROR"
OFFLINE_ENV = "MGKD_OFFLINE"


@dataclass
class FetchReport:
    """Outcome per asset dest: present already, copied from the mirror, downloaded, or missing (with reasons)."""

    present: List[str] = field(default_factory=list)
    copied: List[str] = field(default_factory=list)
    downloaded: List[str] = field(default_factory=list)
    missing: List[Tuple[str, List[str]]] = field(default_factory=list)


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_assets(project_dir: Path) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """The ``assets`` and ``vars`` of ``project_dir/project.yml`` (only plain file assets with a ``dest``)."""
    config = srsly.read_yaml(project_dir / "project.yml") or {}
    assets = [a for a in config.get("assets") or [] if "dest" in a]
    return assets, config.get("vars") or {}


def resolve_mirror(project_dir: Path, mirror: Optional[Path], variables: Dict[str, Any]) -> Optional[Path]:
    """``$MGKD_DATA_MIRROR``, else ``mirror``, else ``vars.data_mirror`` relative to the project directory."""
    if os.environ.get(MIRROR_ENV):
        return Path(os.environ[MIRROR_ENV])
    if mirror is not None:
        return mirror
    if variables.get("data_mirror"):
        return project_dir / str(variables["data_mirror"])
    return None


def _place(dest: Path, checksum: Optional[str], write) -> Optional[str]:
    """Write ``dest`` through a temporary file; keep it only if the md5 matches. Return an error or None."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        write(tmp)
        if checksum and md5(tmp) != checksum:
            return f"md5 {md5(tmp)} != {checksum} (a different or corrupt file)"
        tmp.replace(dest)
        return None
    finally:
        if tmp.exists():
            tmp.unlink()


def _download(url: str, timeout: float):
    def write(path: Path) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response, path.open("wb") as out:
            shutil.copyfileobj(response, out)

    return write


def fetch_assets(project_dir: Path, mirror: Optional[Path] = None, offline: bool = False,
                 timeout: float = 10.0) -> FetchReport:
    """Make every asset of ``project_dir/project.yml`` present with its md5 ``checksum``.

    project_dir (Path): folder holding project.yml; asset dests are relative to it.
    mirror (Optional[Path]): mirror folder (layout ``<dataset>/<file>``); see ``resolve_mirror`` for precedence.
    offline (bool): never try an asset's URL.
    timeout (float): seconds per download attempt.
    RETURNS (FetchReport): what was present, copied, downloaded, and what is still missing, with reasons.
    """
    assets, variables = read_assets(project_dir)
    mirror = resolve_mirror(project_dir, mirror, variables)
    report = FetchReport()
    for asset in assets:
        rel = asset["dest"]
        dest = project_dir / rel
        checksum = asset.get("checksum")
        reasons: List[str] = []
        if dest.exists():
            if not checksum or md5(dest) == checksum:
                report.present.append(rel)
                continue
            reasons.append(f"the file at {rel} has md5 {md5(dest)}, expected {checksum}")
        parts = Path(rel).parts
        source = mirror.joinpath(*parts[1:]) if mirror is not None and parts[0] == "assets" else None
        if source is not None and source.is_file():
            error = _place(dest, checksum, lambda tmp: shutil.copyfile(source, tmp))
            if error is None:
                report.copied.append(rel)
                continue
            reasons.append(f"mirror copy {source}: {error}")
        else:
            reasons.append(f"not in the mirror ({source})" if source is not None else "no mirror set")
        url = asset.get("url")
        if url and not offline:
            try:
                error = _place(dest, checksum, _download(url, timeout))
            except Exception as err:  # any network or HTTP failure is reported, never raised
                error = f"{err.__class__.__name__}: {err}"
            if error is None:
                report.downloaded.append(rel)
                continue
            reasons.append(f"download from {url} failed: {error}")
        elif url:
            reasons.append("offline, download not tried")
        else:
            reasons.append("no public URL (derived or licensed data)")
        report.missing.append((rel, reasons))
    return report


def missing_message(report: FetchReport) -> str:
    lines = [f"{len(report.missing)} asset(s) missing:"]
    for rel, reasons in report.missing:
        lines.append(f"  - {rel}: " + "; ".join(reasons))
    lines.append(
        f"Supply them by setting {MIRROR_ENV} (or --mirror, or vars.data_mirror) to a copy of the data with the "
        "layout <dataset>/<file> (e.g. ../shared/data), or by placing each file at its dest path above, then run "
        "fetch again."
    )
    return "\n".join(lines)


def fetch_cli(
    project_dir: Path = typer.Option(Path("."), "--project-dir", help="Project folder (holds project.yml)"),
    mirror: Optional[Path] = typer.Option(None, "--mirror", help=f"Mirror folder (${MIRROR_ENV} overrides it)"),
    offline: bool = typer.Option(False, "--offline", help=f"Never use the network (also ${OFFLINE_ENV}=1)"),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds per download attempt"),
) -> None:
    """Fetch and verify every asset of project.yml; list everything missing in one message (exit 1)."""
    offline = offline or os.environ.get(OFFLINE_ENV, "") not in ("", "0")
    report = fetch_assets(project_dir, mirror=mirror, offline=offline, timeout=timeout)
    msg.info(f"{len(report.present)} present, {len(report.copied)} copied from the mirror, "
             f"{len(report.downloaded)} downloaded")
    if report.missing:
        msg.fail(missing_message(report), exits=1)
    msg.good("All assets present and verified")
