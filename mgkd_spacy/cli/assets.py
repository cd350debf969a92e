"""``mgkd fetch``: put the project's assets in place from a local mirror (or their URLs), checking md5 sums."""
import hashlib
import os
import shutil
import urllib.request
from pathlib import Path
from typing import List, Optional

import srsly
import typer
from wasabi import msg

MIRROR_ENV = "MGKD_DATA_MIRROR"


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_assets(project_dir: Path, mirror: Optional[Path], offline: bool) -> List[str]:
    """Copy or download every asset of ``project_dir/project.yml``; return the dests still missing or corrupt.

    The mirror has the layout of ``../shared/data``: the asset ``assets/<dataset>/<file>`` is ``<mirror>/<dataset>/<file>``.
    """
    config = srsly.read_yaml(project_dir / "project.yml")
    problems = []
    for asset in config.get("assets", []):
        dest = project_dir / asset["dest"]
        checksum = asset.get("checksum")
        if dest.exists() and (not checksum or md5(dest) == checksum):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        source = mirror / Path(asset["dest"]).relative_to("assets") if mirror else None
        if source is not None and source.exists():
            shutil.copyfile(source, dest)
        elif asset.get("url") and not offline:
            try:
                urllib.request.urlretrieve(asset["url"], dest)
            except OSError as err:
                problems.append(f"{asset['dest']}: download from {asset['url']} failed ({err.__class__.__name__})")
                continue
        else:
            problems.append(f"{asset['dest']}: not in the mirror ({source}) and no download possible")
            continue
        if checksum and md5(dest) != checksum:
            dest.unlink()
            problems.append(f"{asset['dest']}: md5 differs from {checksum} (corrupt or different file)")
    return problems


def fetch_cli(
    project_dir: Path = typer.Option(Path("."), help="Project directory (holds project.yml)"),
    mirror: Optional[Path] = typer.Option(None, help=f"Local mirror directory (${MIRROR_ENV}, if set, wins)"),
    offline: bool = typer.Option(False, "--offline", help="Never try the network"),
) -> None:
    """Fetch every asset; on failure print one message listing all missing assets and how to supply them."""
    mirror = Path(os.environ[MIRROR_ENV]) if os.environ.get(MIRROR_ENV) else mirror
    problems = fetch_assets(project_dir, mirror, offline or os.environ.get("MGKD_OFFLINE") == "1")
    if problems:
        msg.fail(
            f"{len(problems)} asset(s) missing:\n  " + "\n  ".join(problems) + "\nSupply them by pointing "
            f"--mirror or ${MIRROR_ENV} at a copy of the data (layout <dataset>/<file>, e.g. ../shared/data), "
            "or place each file at its dest path.",
            exits=1,
        )
    msg.good("All assets present and verified")
