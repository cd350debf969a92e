"""``mgkd speed``: words/s, parameter counts and disk size of several pipelines on the same text, in one run."""
import json
import statistics
import time
from pathlib import Path
from typing import List, Optional, Tuple

import spacy
import torch
import typer
from spacy.language import Language
from wasabi import msg

from ..crf import ops
from ..precision import inference_dtypes
from ..readers import read_docs


def count_params(nlp: Language) -> Tuple[int, int]:
    """(trainable, total) parameters of every component's model; frozen embedding tables are not trainable."""
    trainable = total = 0
    for _, pipe in nlp.pipeline:
        model = getattr(pipe, "model", None)
        if model is None:
            continue
        for node in model.walk():
            for name in node.param_names:
                if node.has_param(name):
                    size = int(node.get_param(name).size)
                    total += size
                    trainable += 0 if node.name == "teacher_embed" else size
            for shim in node.shims:
                torch_model = getattr(shim, "_model", None)
                if isinstance(torch_model, torch.nn.Module):
                    for p in torch_model.parameters():
                        total += p.numel()
                        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def disk_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def speed_cli(
    models: List[Path] = typer.Argument(..., help="Pipeline directories to compare", exists=True),
    data: Path = typer.Option(..., "--data", exists=True, help=".spacy corpus whose text is tagged"),
    output: Path = typer.Option(Path("metrics/speed.json"), help="JSON file with the results"),
    n_words: int = typer.Option(20000, help="Tag roughly this many words", min=1),
    batch_size: int = typer.Option(64, help="nlp.pipe batch size", min=1),
    threads: int = typer.Option(2, help="torch CPU threads", min=1),
    repeats: int = typer.Option(3, help="Timed passes over the text per pipeline; words/s is their median", min=1),
    entity_scores: Optional[bool] = typer.Option(
        None, "--entity-scores/--no-entity-scores", help="Switch distilled_ner's per-entity probabilities on/off (default: as configured)"
    ),
    kernel: bool = typer.Option(True, help="Decode with the C CRF kernel (--no-kernel: the torch code, as on CUDA)"),
) -> None:
    """Tag the same text with each pipeline (a warm-up batch, then ``repeats`` timed passes) and record words/s and sizes."""
    try:
        backend_switch = ops.use_kernel(kernel)
    except ValueError as err:
        raise typer.BadParameter(f"{err}; or pass --no-kernel")
    with backend_switch:
        results = time_pipelines(models, data, n_words, batch_size, threads, repeats, entity_scores)
    for result in results:
        result["crf_backend"] = "kernel" if kernel else "torch"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    msg.good(f"Wrote {output}")


def time_pipelines(models: List[Path], data: Path, n_words: int, batch_size: int, threads: int, repeats: int,
                   entity_scores: Optional[bool]) -> List[dict]:
    """One result dict per pipeline: words/s (median of ``repeats`` passes after a warm-up batch), parameters, size."""
    torch.set_num_threads(threads)
    texts, words = [], 0
    for doc in read_docs([data], spacy.blank("xx")):
        if words >= n_words:
            break
        texts.append(doc.text)
        words += len(doc)
    results = []
    for path in models:
        nlp = spacy.load(path)
        scored = [pipe for _, pipe in nlp.pipeline if hasattr(pipe, "entity_scores")]
        if entity_scores is not None:
            for pipe in scored:
                pipe.entity_scores = entity_scores
        list(nlp.pipe(texts[:batch_size], batch_size=batch_size))
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            n_tokens = sum(len(doc) for doc in nlp.pipe(texts, batch_size=batch_size))
            runs.append(n_tokens / (time.perf_counter() - started))
        words_per_second = statistics.median(runs)
        trainable, total = count_params(nlp)
        results.append({"model": str(path), "words_per_second": words_per_second, "runs": runs, "words": n_tokens,
                        "trainable_params": trainable, "total_params": total, "disk_bytes": disk_size(path),
                        "batch_size": batch_size, "threads": threads, "lstm_precision": ", ".join(inference_dtypes(nlp)) or None,
                        "entity_scores": any(pipe.entity_scores for pipe in scored)})
        msg.info(f"{path}: {words_per_second:,.0f} words/s (median of {repeats}), {trainable:,} trainable / {total:,} params")
    return results
