"""``mgkd evaluate``: spaCy's evaluate on the stored tokenization, writing metrics JSON (creating its folder)."""
from pathlib import Path
from typing import Optional

import srsly
import typer
from spacy.cli.evaluate import evaluate

from ..training_logger import META_KEY


def training_time(model: Path) -> Optional[dict]:
    """The ``{"seconds", "steps", "words"}`` of the spacy train run that saved ``model``, or None.

    mgkd.TimedConsoleLogger.v1 leaves them in meta.json; only model-last's cover the whole run, so ``model`` must be a
    model-last or a model-best beside one (spacy train's output). Other pipelines (e.g. ``mgkd precision`` copies) get None.
    """
    last = model.parent / "model-last" if model.name == "model-best" else model
    meta = last / "meta.json"
    if last.name != "model-last" or not meta.exists():
        return None
    return srsly.read_json(meta).get(META_KEY)


def evaluate_cli(
    model: Path = typer.Argument(..., exists=True, help="Pipeline directory"),
    data: Path = typer.Argument(..., exists=True, help=".spacy test corpus"),
    output: Path = typer.Option(..., "--output", help="Metrics JSON to write"),
    gpu_id: int = typer.Option(-1, "--gpu-id", help="GPU id, -1 for CPU"),
) -> None:
    """Score ``model`` on ``data`` with gold tokenization (``--gold-preproc``), as the paper's tables do.

    The JSON is spaCy's, plus ``training_time`` (the training's seconds, steps and words) when the pipeline was
    trained with mgkd.TimedConsoleLogger.v1."""
    output.parent.mkdir(parents=True, exist_ok=True)
    scores = evaluate(str(model), data, use_gpu=gpu_id, gold_preproc=True)
    time = training_time(model)
    srsly.write_json(output, {**scores, **({META_KEY: time} if time else {})})
