"""``mgkd evaluate``: spaCy's evaluate on the stored tokenization, writing metrics JSON (creating its folder)."""
from pathlib import Path

import typer
from spacy.cli.evaluate import evaluate


def evaluate_cli(
    model: Path = typer.Argument(..., exists=True, help="Pipeline directory"),
    data: Path = typer.Argument(..., exists=True, help=".spacy test corpus"),
    output: Path = typer.Option(..., "--output", help="Metrics JSON to write"),
    gpu_id: int = typer.Option(-1, "--gpu-id", help="GPU id, -1 for CPU"),
) -> None:
    """Score ``model`` on ``data`` with gold tokenization (``--gold-preproc``), as the paper's tables do."""
    output.parent.mkdir(parents=True, exist_ok=True)
    evaluate(str(model), data, output=output, use_gpu=gpu_id, gold_preproc=True)
