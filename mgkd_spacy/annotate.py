"""Run a trained teacher over docs and attach its k-best surrogates (the distillation targets)."""
from typing import Iterable, List

import torch
from spacy.language import Language
from spacy.tokens import Doc

from .crf import kbest_viterbi, marginals
from .pipeline.distilled_ner import DistilledNER
from .surrogates import Surrogate, set_surrogate, surrogate_from_kbest


def teacher_component(nlp: Language) -> DistilledNER:
    """The teacher's ``distilled_ner`` component (exactly one is expected)."""
    found = [pipe for _, pipe in nlp.pipeline if isinstance(pipe, DistilledNER)]
    if len(found) != 1:
        raise ValueError(f"The teacher pipeline must have exactly one distilled_ner component; found {len(found)}.")
    return found[0]


def teacher_surrogates(nlp: Language, docs: List[Doc], k: int, with_token_targets: bool = True) -> List[Surrogate]:
    """The teacher's top-``k`` sequences with exact probabilities (and token-level targets) for each doc.

    The docs are copied (same tokens) before the teacher runs, so the inputs keep their own annotations.
    """
    ner = teacher_component(nlp)
    copies = [Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc]) for doc in docs]
    for _, pipe in nlp.pipeline:
        if pipe is ner:
            break
        copies = list(pipe.pipe(copies)) if hasattr(pipe, "pipe") else [pipe(doc) for doc in copies]
    if not any(len(doc) for doc in copies):
        return [surrogate_from_kbest(ner.tags, ner.cfg["scheme"], [[]], [0.0], [True]) for _ in docs]
    batch = ner.model.predict(copies)
    transitions, start, end = batch.potentials()
    args = (batch.emissions, batch.lengths, transitions, start, end)
    with torch.no_grad():
        best = kbest_viterbi(*args, k)
        log_softmax = torch.log_softmax(batch.emissions, dim=-1) if with_token_targets else None
        marg = marginals(*args) if with_token_targets else None
    out = []
    for i, n in enumerate(batch.lengths.tolist()):
        out.append(
            surrogate_from_kbest(
                ner.tags,
                ner.cfg["scheme"],
                best.tags[i, :, :n].numpy(),
                best.log_probs[i].numpy(),
                best.valid[i].numpy(),
                emission_log_probs=None if log_softmax is None else log_softmax[i, :n].numpy().astype("float16"),
                marginals=None if marg is None else marg[i, :n].numpy().astype("float16"),
            )
        )
    return out


def annotate_docs(nlp: Language, docs: Iterable[Doc], k: int, batch_size: int, with_token_targets: bool) -> List[Doc]:
    """Attach teacher surrogates to ``docs`` in batches; returns the same Doc objects."""
    docs = list(docs)
    for begin in range(0, len(docs), batch_size):
        chunk = docs[begin : begin + batch_size]
        for doc, surrogate in zip(chunk, teacher_surrogates(nlp, chunk, k, with_token_targets)):
            set_surrogate(doc, surrogate)
    return docs
