"""How peaked the teacher's k-best distribution is, and how often its top-1 matches the gold tags.

Usage: python scripts/teacher_stats.py annotations/conll2003/train --out metrics/conll2003/teacher_stats.json
Reads the surrogates written by ``mgkd annotate`` and reports, over sentences with at least one token: the mean
probability of the teacher's best sequence (p_1), of its K best together (p_sum) and of the residual (1 - p_sum),
the share of sentences with p_1 > 0.9 / 0.99, and (on gold-annotated docs) the share whose top-1 equals the gold
tags, the share with the gold tags anywhere among the K sequences, and the teacher's mean probability of the gold
sequence where it is among them (0 where it is not). These say how much more than the top-1 the sequence-level losses can pass on to the student.
The three gold statistics are null when no doc carries gold entities (unlabeled text).
"""
import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy
import spacy
import typer
from spacy.training.iob_utils import doc_to_biluo_tags

from mgkd_spacy.readers import read_docs
from mgkd_spacy.surrogates import get_surrogate
from mgkd_spacy.tagging import biluo_to_scheme


def teacher_stats(paths: List[Path]) -> Dict[str, Optional[float]]:
    """Summary statistics of the surrogates stored on the docs under ``paths``."""
    p1, psum, n_kept, agree, gold_found, gold_prob = [], [], [], [], [], []
    for i, doc in enumerate(read_docs(paths, spacy.blank("xx"))):
        surrogate = get_surrogate(doc, doc_index=i)
        if surrogate is None or not len(doc):
            continue
        probs = numpy.exp(surrogate.log_probs.astype("float64"))
        p1.append(probs[0])
        psum.append(probs.sum())
        n_kept.append(len(probs))
        if doc.has_annotation("ENT_IOB"):
            gold = biluo_to_scheme(doc_to_biluo_tags(doc), surrogate.scheme)
            ranks = [k for k, seq in enumerate(surrogate.sequences) if [surrogate.tags[t] for t in seq] == gold]
            agree.append(ranks[:1] == [0])
            gold_found.append(bool(ranks))
            gold_prob.append(probs[ranks[0]] if ranks else 0.0)
    if not p1:
        raise ValueError(f"No annotated sentences under {', '.join(map(str, paths))}: annotate them with the "
                         "teacher first (`mgkd annotate <teacher> <corpus> <output>`).")
    p1_a, psum_a = numpy.asarray(p1), numpy.asarray(psum)
    return {
        "sentences": len(p1),
        "mean_sequences_kept": float(numpy.mean(n_kept)),
        "mean_p1": float(p1_a.mean()),
        "mean_psum": float(psum_a.mean()),
        "mean_residual": float((1 - psum_a).mean()),
        "share_p1_over_0.9": float((p1_a > 0.9).mean()),
        "share_p1_over_0.99": float((p1_a > 0.99).mean()),
        "share_top1_equals_gold": float(numpy.mean(agree)) if agree else None,
        "share_gold_in_kbest": float(numpy.mean(gold_found)) if gold_found else None,
        "mean_teacher_prob_of_gold": float(numpy.mean(gold_prob)) if gold_prob else None,
    }


def main(
    paths: List[Path] = typer.Argument(..., exists=True, help="Annotated .spacy files or directories"),
    out: Path = typer.Option(..., help="JSON file for the statistics"),
) -> None:
    try:
        stats = teacher_stats(paths)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="PATHS")
    text = json.dumps(stats, indent=2, allow_nan=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    typer.run(main)
