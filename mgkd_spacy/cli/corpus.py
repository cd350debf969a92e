"""``mgkd sample``: a random sample of a ``.spacy`` corpus (teacher surrogates kept)."""
import random
from pathlib import Path

import spacy
import typer
from spacy.tokens import DocBin
from wasabi import msg

from ..readers import read_docs


def sample_cli(
    input_path: Path = typer.Argument(..., exists=True, help=".spacy file or directory"),
    output: Path = typer.Argument(..., help="Output .spacy file"),
    n: int = typer.Option(300, "--n", help="Number of docs to keep", min=1),
    seed: int = typer.Option(0, help="Random seed"),
) -> None:
    """Keep a random sample of ``n`` docs (user data included) - used by the smoke workflow."""
    nlp = spacy.blank("xx")
    docs = list(read_docs([input_path], nlp))
    random.Random(seed).shuffle(docs)
    output.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs[:n], store_user_data=True).to_disk(output)
    msg.good(f"Wrote {min(n, len(docs))} of {len(docs)} docs to {output}")
