"""Corpus utilities: take a sample of a ``.spacy`` corpus; turn raw unlabeled text into a ``.spacy`` corpus."""
import random
import re
import unicodedata
from pathlib import Path

import spacy
import typer
from spacy.tokens import Doc, DocBin
from wasabi import msg

from ..readers import read_docs

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


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


def text_cli(
    input_path: Path = typer.Argument(..., exists=True, help="Text file, one sentence per line"),
    output: Path = typer.Argument(..., help="Output .spacy file"),
    lang: str = typer.Option("en", help="Tokenizer language; 'zh-char' for one token per character"),
    limit: int = typer.Option(0, help="Keep at most this many sentences (0 = all)", min=0),
    max_tokens: int = typer.Option(256, help="Split longer lines into pieces of this many tokens", min=1),
) -> None:
    """Unlabeled text -> .spacy docs without entities. Empty lines are skipped, control characters removed,
    invalid UTF-8 replaced, over-long lines split; each kind is counted."""
    nlp = spacy.blank("en" if lang == "zh-char" else lang)
    counts = {"empty": 0, "control chars removed": 0, "invalid utf-8 repaired": 0, "split": 0}
    docs = []
    with input_path.open("rb") as f:
        for raw in f:
            line = raw.decode("utf-8", errors="replace")
            if "\ufffd" in line and b"\xef\xbf\xbd" not in raw:
                counts["invalid utf-8 repaired"] += 1
            clean = CONTROL.sub(" ", unicodedata.normalize("NFC", line)).strip()
            if clean != line.strip():
                counts["control chars removed"] += 1
            if not clean:
                counts["empty"] += 1
                continue
            if lang == "zh-char":
                chars = [c for c in clean if not c.isspace()]
                doc = Doc(nlp.vocab, words=chars, spaces=[False] * len(chars))
            else:
                doc = nlp.make_doc(clean)
            pieces = [doc[i : i + max_tokens].as_doc() for i in range(0, len(doc), max_tokens)]
            counts["split"] += len(pieces) > 1
            docs.extend(pieces)
            if limit and len(docs) >= limit:
                docs = docs[:limit]
                break
    output.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs).to_disk(output)
    msg.good(f"Wrote {len(docs)} docs ({sum(len(d) for d in docs)} tokens) to {output}; " +
             ", ".join(f"{k}: {v}" for k, v in counts.items()))


def sentences_cli(
    input_path: Path = typer.Argument(..., exists=True, help=".spacy file whose docs have sentence boundaries"),
    output: Path = typer.Argument(..., help="Output .spacy file, one doc per sentence"),
    expect: str = typer.Option("", help="Expected 'sentences,tokens,entities' (e.g. from the data README); fail if different"),
) -> None:
    """Split documents into one doc per sentence (entities kept), dropping '-DOCSTART-' marker sentences."""
    nlp = spacy.blank("xx")
    docs = []
    for doc in read_docs([input_path], nlp):
        sents = doc.sents if doc.has_annotation("SENT_START") else [doc[:]]
        docs.extend(s.as_doc() for s in sents if [t.text for t in s] != ["-DOCSTART-"])
    counts = (len(docs), sum(len(d) for d in docs), sum(len(d.ents) for d in docs))
    if expect and tuple(int(x.replace("_", "")) for x in expect.split(",")) != counts:
        msg.fail(f"{input_path}: got sentences, tokens, entities = {counts}, expected {expect}; the input is not the "
                 "documented file (check the asset's checksum).", exits=1)
    output.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs).to_disk(output)
    msg.good(f"Wrote {counts[0]} sentences, {counts[1]} tokens, {counts[2]} entities to {output}")
