"""Entity F1 split by whether the entity's text and label occur in the training data ("seen") or not ("unseen").

Usage: python scripts/seen_unseen.py corpus/conll2003/train.spacy corpus/conll2003/test.spacy
           training/conll2003/teacher_mpnet/model-best training/conll2003/mpnet_te_da_seq/model-best
           --out metrics/conll2003_analysis/seen_unseen.json
Each model tags the test sentences with their gold tokenization (as ``mgkd evaluate`` does). A gold entity counts
as seen when the same (text, label) pair is a gold entity anywhere in the training data; a predicted entity is
scored in the bucket its own (text, label) falls in, so precision, recall and F1 are exact within each bucket.
"""
import json
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

import spacy
import typer
from spacy.tokens import Doc

from mgkd_spacy.readers import read_docs

Entity = Tuple[int, int, int, str]  # (sentence, start token, end token, label)


def surface_forms(docs: Iterable[Doc]) -> Set[Tuple[str, str]]:
    """(text, label) of every entity in ``docs``."""
    return {(ent.text, ent.label_) for doc in docs for ent in doc.ents}


def bucket_scores(gold: List[Doc], predicted: List[Doc], seen: Set[Tuple[str, str]]) -> Dict[str, Dict[str, float]]:
    """Entity P/R/F1 (x100) and counts for the seen and unseen buckets and for all entities."""
    buckets: Dict[str, Tuple[Set[Entity], Set[Entity]]] = {name: (set(), set()) for name in ("seen", "unseen", "all")}
    for i, (gold_doc, predicted_doc) in enumerate(zip(gold, predicted, strict=True)):
        for side, doc in enumerate((gold_doc, predicted_doc)):
            for ent in doc.ents:
                entity = (i, ent.start, ent.end, ent.label_)
                buckets["seen" if (ent.text, ent.label_) in seen else "unseen"][side].add(entity)
                buckets["all"][side].add(entity)
    scores = {}
    for name, (gold_ents, predicted_ents) in buckets.items():
        correct = len(gold_ents & predicted_ents)
        p = correct / len(predicted_ents) if predicted_ents else 0.0
        r = correct / len(gold_ents) if gold_ents else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        scores[name] = {"gold": len(gold_ents), "predicted": len(predicted_ents), "p": 100 * p, "r": 100 * r, "f": 100 * f}
    return scores


def tag(model: Path, gold: List[Doc]) -> List[Doc]:
    """The model's predictions on unannotated copies of ``gold`` (same tokens and spaces)."""
    nlp = spacy.load(model)
    texts = (Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc]) for doc in gold)
    return list(nlp.pipe(texts, batch_size=64))


def main(
    train: Path = typer.Argument(..., exists=True, help="Training data (.spacy file or directory): defines 'seen'"),
    test: Path = typer.Argument(..., exists=True, help="Gold test data (.spacy file or directory)"),
    models: List[Path] = typer.Argument(..., exists=True, help="Pipelines to score"),
    out: Path = typer.Option(..., help="JSON file for the scores, one entry per model"),
) -> None:
    vocab_nlp = spacy.blank("xx")
    seen = surface_forms(read_docs([train], vocab_nlp))
    gold = list(read_docs([test], vocab_nlp))
    results = {str(model): bucket_scores(gold, tag(model, gold), seen) for model in models}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for model, scores in results.items():
        print(model, " ".join(f"{name} F1 {s['f']:.2f} ({s['gold']} gold)" for name, s in scores.items()))


if __name__ == "__main__":
    typer.run(main)
