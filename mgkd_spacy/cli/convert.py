"""Corpus converters: the raw files of each dataset in ``../shared/data`` -> spaCy ``.spacy`` DocBins.

Every labeled converter writes ``<output_dir>/{train,dev,test}.spacy`` (one Doc per sentence, ``doc.ents`` set),
prints docs / tokens / entities per type, and checks these counts against the numbers in the dataset's README
(the ``EXPECTED`` table below); a mismatch fails loudly unless ``--no-check`` is given (custom data). Entity chunks
follow conlleval, as the READMEs' counts do, so IOB1, IOB2 and BMES/BIOES input all read the same way.
"""
import json
import random
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import spacy
import typer
from spacy.tokens import Doc, DocBin, Span
from spacy.training.converters import conll_ner_to_docs
from spacy.util import filter_spans
from spacy.vocab import Vocab
from wasabi import msg

Arg = typer.Argument
Opt = typer.Option

app = typer.Typer(help="Convert the project's corpora to .spacy files", no_args_is_help=True)

Sentence = Tuple[List[str], List[str]]  # (tokens, tags)
Chunk = Tuple[str, int, int]  # (label, start, end) token offsets, end exclusive


@dataclass
class Counts:
    """What a converted split holds: docs (sentences), tokens and entities per label."""

    docs: int = 0
    tokens: int = 0
    ents: Dict[str, int] = field(default_factory=dict)

    @property
    def n_ents(self) -> int:
        return sum(self.ents.values())

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.docs + other.docs, self.tokens + other.tokens, dict(Counter(self.ents) + Counter(other.ents)))


def _c(docs: int, tokens: int, **ents: int) -> Counts:
    return Counts(docs, tokens, {k.replace("__", "-").replace("_", "."): v for k, v in ents.items()})


# Counts from each dataset's README in ../shared/data ("tokens" are characters for the Chinese corpora; label
# keys use "_" for "." and "__" for "-"). MSRA and SemEval have no dev file: their rows are for the whole train file.
EXPECTED: Dict[Tuple[str, str], Counts] = {
    ("conll2003", "train"): _c(14041, 203621, LOC=7140, MISC=3438, ORG=6321, PER=6600),
    ("conll2003", "dev"): _c(3250, 51362, LOC=1837, MISC=922, ORG=1341, PER=1842),
    ("conll2003", "test"): _c(3453, 46435, LOC=1668, MISC=702, ORG=1661, PER=1617),
    ("wnut17", "train"): _c(3394, 62730, corporation=221, creative__work=140, group=264, location=548, person=660, product=142),
    ("wnut17", "dev"): _c(1009, 15733, corporation=34, creative__work=105, group=39, location=74, person=470, product=114),
    ("wnut17", "test"): _c(1287, 23394, corporation=66, creative__work=142, group=165, location=150, person=429, product=127),
    ("weibo", "train"): _c(1350, 73778, GPE_NAM=205, GPE_NOM=8, LOC_NAM=56, LOC_NOM=51, ORG_NAM=183, ORG_NOM=42, PER_NAM=578, PER_NOM=772),
    ("weibo", "dev"): _c(270, 14509, GPE_NAM=26, GPE_NOM=1, LOC_NAM=6, LOC_NOM=6, ORG_NAM=47, ORG_NOM=5, PER_NAM=90, PER_NOM=208),
    ("weibo", "test"): _c(270, 14842, GPE_NAM=47, GPE_NOM=2, LOC_NAM=19, LOC_NOM=9, ORG_NAM=39, ORG_NOM=17, PER_NAM=113, PER_NOM=172),
    ("resume", "train"): _c(3821, 124099, CONT=260, EDU=858, LOC=47, NAME=952, ORG=4613, PRO=287, RACE=115, TITLE=6308),
    ("resume", "dev"): _c(463, 13890, CONT=33, EDU=106, LOC=2, NAME=110, ORG=523, PRO=18, RACE=15, TITLE=690),
    ("resume", "test"): _c(477, 15100, CONT=28, EDU=112, LOC=6, NAME=112, ORG=553, PRO=33, RACE=14, TITLE=772),
    ("msra", "train"): _c(50658, 2169879, LOC=36517, ORG=20574, PER=17618),
    ("msra", "test"): _c(4631, 172601, LOC=2877, ORG=1331, PER=1984),
}
# SemEval-2016 restaurants: sentences, whitespace tokens and distinct non-NULL target spans (aspect terms).
EXPECTED_ABSA: Dict[str, Tuple[int, int, int]] = {"train": (2000, 25089, 1776), "test": (676, 8642, 612)}
# Unlabeled text: non-empty lines.
EXPECTED_LINES: Dict[str, int] = {"unlabeled_reuters21578": 99601, "unlabeled_wnut17": 99334, "unlabeled_weibo": 16712}

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
WEIBO_TOKEN = re.compile(r"(.+?)(\d+)")


class CountMismatch(ValueError):
    """Converted counts differ from the dataset README's."""


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces


def read_columns(path: Path) -> Iterator[Sentence]:
    """Sentences of a one-token-per-line file: first field the token, last field the tag.

    Whitespace-only lines separate sentences; ``-DOCSTART-`` lines are skipped. Fields are split on a TAB if the
    line has one, else on whitespace.
    """
    words: List[str] = []
    tags: List[str] = []
    with path.open(encoding="utf8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if words:
                    yield words, tags
                words, tags = [], []
                continue
            cols = line.split("\t") if "\t" in line else line.split()
            if len(cols) < 2:
                raise ValueError(f"{path}:{lineno}: expected 'token ... tag', got {line!r}")
            words.append(cols[0])
            tags.append(cols[-1].strip())
    if words:
        yield words, tags


def _split_tag(tag: str) -> Tuple[str, str]:
    """('B'|'I'|'E'|'S'|'O', type); BMES's M and BILUO's L/U are mapped to I, E and S."""
    if tag == "O" or "-" not in tag:
        return "O", ""
    prefix, label = tag.split("-", 1)
    return {"M": "I", "L": "E", "U": "S"}.get(prefix, prefix), label


def chunk_tags(tags: Sequence[str]) -> List[Chunk]:
    """Entity chunks as conlleval delimits them, for IOB1, IOB2, BIOES/BILUO and BMES alike.

    A chunk opens at B/S, or at I/E after O, after E/S, or after another type; it closes before any tag that opens
    one and before O. Ill-formed sequences (an I without B, an unterminated B) are read, never rejected.
    """
    chunks: List[Chunk] = []
    start, prev_prefix, prev_label = -1, "O", ""
    for i, tag in enumerate(tags):
        prefix, label = _split_tag(tag)
        opens = prefix in ("B", "S") or (
            prefix in ("I", "E") and (prev_prefix in ("O", "E", "S") or label != prev_label)
        )
        if start >= 0 and (prefix == "O" or opens):
            chunks.append((prev_label, start, i))
            start = -1
        if opens:
            start = i
        prev_prefix, prev_label = prefix, label
    if start >= 0:
        chunks.append((prev_label, start, len(tags)))
    return chunks


def make_doc(vocab: Vocab, words: List[str], tags: Sequence[str], spaces: Optional[List[bool]] = None) -> Doc:
    """A Doc over ``words`` with ``doc.ents`` from ``tags``; ``spaces=None`` means a space after every word."""
    doc = Doc(vocab, words=words, spaces=spaces)
    doc.ents = [Span(doc, s, e, label=label) for label, s, e in chunk_tags(tags)]
    return doc


def count_docs(docs: Iterable[Doc]) -> Counts:
    counts = Counts()
    ents: Counter = Counter()
    for doc in docs:
        counts.docs += 1
        counts.tokens += len(doc)
        ents.update(e.label_ for e in doc.ents)
    counts.ents = dict(sorted(ents.items()))
    return counts


def check_counts(name: str, got: Counts, expected: Counts) -> None:
    """Raise ``CountMismatch`` naming every difference between converted and documented counts."""
    diffs = []
    if got.docs != expected.docs:
        diffs.append(f"sentences {got.docs} != {expected.docs}")
    if got.tokens != expected.tokens:
        diffs.append(f"tokens {got.tokens} != {expected.tokens}")
    for label in sorted(set(got.ents) | set(expected.ents)):
        if got.ents.get(label, 0) != expected.ents.get(label, 0):
            diffs.append(f"{label} {got.ents.get(label, 0)} != {expected.ents.get(label, 0)}")
    if diffs:
        raise CountMismatch(f"{name}: counts differ from the data README: {'; '.join(diffs)}. The input is not the "
                            "documented file (check the asset's checksum), or pass --no-check for custom data.")


def print_counts(name: str, counts: Counts) -> None:
    msg.info(f"{name}: {counts.docs} docs, {counts.tokens} tokens, {counts.n_ents} entities")
    if counts.ents:
        msg.table(sorted(counts.ents.items()), header=("label", "entities"), divider=True)


def write_docs(docs: List[Doc], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs).to_disk(path)
    msg.good(f"Wrote {len(docs)} docs to {path}")


def _finish(dataset: str, splits: Dict[str, List[Doc]], output_dir: Path, check: bool,
            expected: Optional[Dict[str, Counts]] = None) -> Dict[str, Counts]:
    """Print and check the counts of every split, then write them (nothing is written if a check fails)."""
    all_counts = {split: count_docs(docs) for split, docs in splits.items()}
    for split, counts in all_counts.items():
        print_counts(f"{dataset}/{split}", counts)
    if check:
        for split, counts in all_counts.items():
            exp = (expected or {}).get(split, EXPECTED.get((dataset, split)))
            if exp is not None:
                check_counts(f"{dataset}/{split}", counts, exp)
        msg.good(f"{dataset}: counts match the data README")
    for split, docs in splits.items():
        write_docs(docs, output_dir / f"{split}.spacy")
    return all_counts


def _take(sentences: Iterable[Sentence], limit: int) -> List[Sentence]:
    out = []
    for sent in sentences:
        if limit and len(out) >= limit:
            break
        out.append(sent)
    return out


def _run(fn, *args, **kwargs):
    """Call a converter from the CLI: count mismatches and bad input become one clear failure message."""
    try:
        return fn(*args, **kwargs)
    except (CountMismatch, ValueError, OSError) as err:
        msg.fail(str(err), exits=1)


def _no_check_with_limit(limit: int, check: bool) -> bool:
    if limit and check:
        msg.warn(f"--limit {limit}: only the first sentences are converted, so counts are not checked")
    return check and not limit


# ---------------------------------------------------------------------------------------------------------------
# Labeled corpora


def convert_conll2003(input_dir: Path, output_dir: Path, n_sents: int = 1, check: bool = True) -> Dict[str, Counts]:
    """CoNLL-2003 (IOB1) with spaCy's own ``ner`` converter; ``-DOCSTART-`` lines become document boundaries.

    n_sents (int): 1 = one Doc per sentence; 0 = one Doc per original document; N = N sentences per Doc.
    Counts are checked on the sentences whatever the grouping.
    """
    splits: Dict[str, List[Doc]] = {}
    sentence_counts: Dict[str, Counts] = {}
    for split in ("train", "dev", "test"):
        text = (input_dir / f"{split}.conll").read_text(encoding="utf8")
        # The test file marks documents with "-DOCSTART- -X- -X- O"; spaCy's converter looks for "-DOCSTART- -X- O O".
        text = re.sub(r"(?m)^-DOCSTART-.*$", "-DOCSTART- -X- O O", text)
        documents = list(conll_ner_to_docs(text, n_sents=0, no_print=True))
        sentences = [s.as_doc() for doc in documents for s in doc.sents]
        sentence_counts[split] = count_docs(sentences)
        if n_sents == 1:
            splits[split] = sentences
        elif n_sents == 0:
            splits[split] = documents
        else:
            splits[split] = [Doc.from_docs(sentences[i : i + n_sents]) for i in range(0, len(sentences), n_sents)]
    for split, counts in sentence_counts.items():
        print_counts(f"conll2003/{split} (sentences)", counts)
    if check:
        for split, counts in sentence_counts.items():
            check_counts(f"conll2003/{split}", counts, EXPECTED[("conll2003", split)])
        msg.good("conll2003: counts match the data README")
    for split, docs in splits.items():
        write_docs(docs, output_dir / f"{split}.spacy")
    return sentence_counts


def convert_wnut17(input_dir: Path, output_dir: Path, check: bool = True) -> Dict[str, Counts]:
    """WNUT-17 (IOB2, token<TAB>tag; train separates sentences with TAB-only lines)."""
    vocab = Vocab()
    splits = {s: [make_doc(vocab, w, t) for w, t in read_columns(input_dir / f"{s}.conll")] for s in ("train", "dev", "test")}
    return _finish("wnut17", splits, output_dir, check)


def weibo_char(token: str) -> str:
    """``科0`` -> ``科``: drop the jieba position digits (non-greedy, so ``10`` is the character ``1``)."""
    match = WEIBO_TOKEN.fullmatch(token)
    if match is None:
        raise ValueError(f"Weibo token {token!r} has no trailing position digits")
    return match.group(1)


def convert_weibo(input_dir: Path, output_dir: Path, named_only: bool = False, check: bool = True) -> Dict[str, Counts]:
    """Weibo NER 2nd version: character tokens (position digits stripped, no spaces), IOB2 tags.

    named_only (bool): map the nominal ``*.NOM`` mentions to O (the common "named entities only" setting).
    """
    vocab = Vocab()
    splits: Dict[str, List[Doc]] = {}
    expected: Dict[str, Counts] = {}
    for split in ("train", "dev", "test"):
        docs = []
        for words, tags in read_columns(input_dir / f"{split}.conll"):
            chars = [weibo_char(w) for w in words]
            if named_only:
                tags = ["O" if t.endswith(".NOM") else t for t in tags]
            docs.append(make_doc(vocab, chars, tags, spaces=[False] * len(chars)))
        splits[split] = docs
        exp = EXPECTED[("weibo", split)]
        ents = {k: v for k, v in exp.ents.items() if not (named_only and k.endswith(".NOM"))}
        expected[split] = Counts(exp.docs, exp.tokens, ents)
    return _finish("weibo", splits, output_dir, check, expected)


def convert_resume(input_dir: Path, output_dir: Path, check: bool = True) -> Dict[str, Counts]:
    """Resume NER: character tokens, BMES tags (M = inside, E = end, S = single) read into entity spans."""
    vocab = Vocab()
    splits = {}
    for split in ("train", "dev", "test"):
        splits[split] = [make_doc(vocab, w, t, spaces=[False] * len(w)) for w, t in read_columns(input_dir / f"{split}.bmes")]
    return _finish("resume", splits, output_dir, check)


def convert_msra(input_dir: Path, output_dir: Path, dev_fraction: float = 0.05, seed: int = 0, limit: int = 0,
                 check: bool = True) -> Dict[str, Counts]:
    """MSRA (character IOB2). No dev file: a dev split of ``dev_fraction`` of the train sentences is drawn with
    ``seed`` and its sentence indices are recorded in ``<output_dir>/split.json``. Counts are checked on train + dev
    together (the README's train row). limit (int): convert only the first N sentences of each file (no check)."""
    check = _no_check_with_limit(limit, check)
    vocab = Vocab()
    train_sents = _take(read_columns(input_dir / "train.conll"), limit)
    test_sents = _take(read_columns(input_dir / "test.conll"), limit)
    n_dev = round(len(train_sents) * dev_fraction)
    dev_ids = sorted(random.Random(seed).sample(range(len(train_sents)), n_dev))
    dev_set = set(dev_ids)

    def docs(sents: List[Sentence]) -> List[Doc]:
        return [make_doc(vocab, w, t, spaces=[False] * len(w)) for w, t in sents]

    train_docs = docs([s for i, s in enumerate(train_sents) if i not in dev_set])
    dev_docs = docs([train_sents[i] for i in dev_ids])
    test_docs = docs(test_sents)
    splits = {"train": train_docs, "dev": dev_docs, "test": test_docs}
    counts = {split: count_docs(d) for split, d in splits.items()}
    for split, c in counts.items():
        print_counts(f"msra/{split}", c)
    if check:
        check_counts("msra/train+dev", counts["train"] + counts["dev"], EXPECTED[("msra", "train")])
        check_counts("msra/test", counts["test"], EXPECTED[("msra", "test")])
        msg.good("msra: counts match the data README (train + dev = the README's train row)")
    for split, d in splits.items():
        write_docs(d, output_dir / f"{split}.spacy")
    record = {"source": "train.conll", "seed": seed, "dev_fraction": dev_fraction, "limit": limit,
              "n_train_file": len(train_sents), "n_train": len(train_docs), "n_dev": len(dev_docs),
              "dev_sentence_indices": dev_ids}
    split_path = output_dir / "split.json"
    split_path.write_text(json.dumps(record) + "\n", encoding="utf8")
    msg.good(f"Recorded the dev split ({len(dev_docs)} of {len(train_sents)} train sentences, seed {seed}) in {split_path}")
    return counts


@dataclass
class AbsaStats:
    sentences: int = 0
    whitespace_tokens: int = 0
    aspect_terms: int = 0  # distinct non-NULL (from, to) spans
    null_targets: int = 0
    dropped_overlap: int = 0  # distinct spans dropped because they overlap (after token alignment) a kept one
    text_mismatch: int = 0  # target attribute differs from text[from:to]


def read_absa(path: Path, nlp) -> Tuple[List[Tuple[str, Doc]], AbsaStats]:
    """(review id, Doc) per sentence of a SemEval-2016 ABSA XML file, aspect terms as ``ASPECT`` entities.

    Each distinct non-NULL (from, to) target span is aligned to tokens with ``char_span(alignment_mode="expand")``;
    of spans that overlap after alignment the longest is kept (``filter_spans``) and the rest are counted.
    """
    stats = AbsaStats()
    out = []
    for review in ET.parse(path).getroot().iter("Review"):
        for sentence in review.iter("sentence"):
            text = sentence.findtext("text") or ""
            doc = nlp.make_doc(text)
            stats.sentences += 1
            stats.whitespace_tokens += len(text.split())
            offsets = set()
            for op in sentence.iter("Opinion"):
                if op.get("target", "NULL") == "NULL":
                    stats.null_targets += 1
                    continue
                start, end = int(op.get("from")), int(op.get("to"))
                if text[start:end] != op.get("target"):
                    stats.text_mismatch += 1
                offsets.add((start, end))
            stats.aspect_terms += len(offsets)
            spans = []
            for start, end in sorted(offsets):
                span = doc.char_span(start, end, label="ASPECT", alignment_mode="expand")
                if span is None:
                    raise ValueError(f"{path}: sentence {sentence.get('id')}: target offsets {start}-{end} are "
                                     f"outside the text {text!r}")
                spans.append(span)
            kept = filter_spans(spans)
            stats.dropped_overlap += len(spans) - len(kept)
            doc.ents = kept
            out.append((review.get("rid"), doc))
    return out, stats


def convert_semeval(input_dir: Path, output_dir: Path, dev_fraction: float = 0.1, seed: int = 0,
                    check: bool = True) -> Dict[str, Counts]:
    """SemEval-2016 Task 5 restaurants (English, subtask 1): opinion target spans as one ``ASPECT`` type, tokens from
    a blank English tokenizer. No dev file: ``dev_fraction`` of the train *reviews* (so no review is split across
    train and dev) are drawn with ``seed``; the review ids are recorded in ``<output_dir>/split.json``."""
    nlp = spacy.blank("en")
    train, train_stats = read_absa(input_dir / "train.xml", nlp)
    test, test_stats = read_absa(input_dir / "test.xml", nlp)
    for split, stats in (("train", train_stats), ("test", test_stats)):
        msg.info(f"semeval2016_absa_restaurants/{split}: {stats.sentences} sentences, {stats.whitespace_tokens} "
                 f"whitespace tokens, {stats.aspect_terms} distinct target spans ({stats.null_targets} NULL targets "
                 f"skipped, {stats.dropped_overlap} overlapping spans dropped, {stats.text_mismatch} target/offset "
                 "text mismatches)")
        if check:
            got = (stats.sentences, stats.whitespace_tokens, stats.aspect_terms)
            if got != EXPECTED_ABSA[split]:
                raise CountMismatch(f"semeval2016_absa_restaurants/{split}: (sentences, whitespace tokens, aspect "
                                    f"terms) = {got}, README says {EXPECTED_ABSA[split]}; pass --no-check for custom data.")
    reviews = sorted({rid for rid, _ in train})
    dev_reviews = set(random.Random(seed).sample(reviews, round(len(reviews) * dev_fraction)))
    splits = {"train": [d for rid, d in train if rid not in dev_reviews],
              "dev": [d for rid, d in train if rid in dev_reviews],
              "test": [d for _, d in test]}
    counts = {split: count_docs(docs) for split, docs in splits.items()}
    if check:
        for split, stats in (("train", train_stats), ("test", test_stats)):
            n_ents = counts["test"].n_ents if split == "test" else counts["train"].n_ents + counts["dev"].n_ents
            if n_ents + stats.dropped_overlap != stats.aspect_terms:
                raise CountMismatch(f"semeval2016_absa_restaurants/{split}: {n_ents} entities + "
                                    f"{stats.dropped_overlap} dropped != {stats.aspect_terms} aspect terms")
    _finish("semeval2016_absa_restaurants", splits, output_dir, check=False)
    if check:
        msg.good("semeval2016_absa_restaurants: counts match the data README")
    record = {"source": "train.xml", "seed": seed, "dev_fraction": dev_fraction, "unit": "review",
              "n_train": len(splits["train"]), "n_dev": len(splits["dev"]), "dev_review_ids": sorted(dev_reviews),
              "dropped_overlapping_spans": {"train": train_stats.dropped_overlap, "test": test_stats.dropped_overlap}}
    (output_dir / "split.json").write_text(json.dumps(record) + "\n", encoding="utf8")
    msg.good(f"Recorded the dev split ({len(dev_reviews)} of {len(reviews)} train reviews, seed {seed}) in "
             f"{output_dir / 'split.json'}")
    return counts


# ---------------------------------------------------------------------------------------------------------------
# Unlabeled text


@dataclass
class TextStats:
    lines: int = 0  # non-empty lines converted
    empty: int = 0
    invalid_utf8: int = 0  # lines decoded with replacement characters
    control_chars: int = 0  # lines with control characters replaced by spaces
    split: int = 0  # lines longer than max_tokens, split into several docs
    docs: int = 0
    tokens: int = 0


def convert_text(inputs: Sequence[Path], output: Path, lang: str = "en", chars: bool = False, limit: int = 0,
                 max_tokens: int = 512, dataset: str = "", check: bool = True) -> TextStats:
    """Plain text, one sentence per line -> Docs without entities. Never fails on bad lines: empty lines are
    skipped, invalid UTF-8 is decoded with U+FFFD, control characters become spaces, and a line of more than
    ``max_tokens`` tokens is split into pieces; each case is counted.

    chars (bool): one token per non-space character (Chinese), ``spaces=False``; else ``spacy.blank(lang)``.
    limit (int): stop after the first N non-empty lines (0 = all).
    dataset (str): a key of ``EXPECTED_LINES``; the number of non-empty lines is checked unless ``limit`` cut the
        text short.
    """
    nlp = spacy.blank(lang)
    stats = TextStats()
    docs: List[Doc] = []
    for path in inputs:
        with Path(path).open("rb") as f:
            for raw in f:
                if limit and stats.lines >= limit:
                    break
                try:
                    line = raw.decode("utf8")
                except UnicodeDecodeError:
                    line = raw.decode("utf8", errors="replace")
                    stats.invalid_utf8 += 1
                line = line.rstrip("\n")
                clean = CONTROL.sub(" ", line)
                if clean != line and clean.strip() != line.strip():
                    stats.control_chars += 1
                clean = unicodedata.normalize("NFC", clean).strip()
                if not clean:
                    stats.empty += 1
                    continue
                stats.lines += 1
                if chars:
                    words = [c for c in clean if not c.isspace()]
                    doc = Doc(nlp.vocab, words=words, spaces=[False] * len(words))
                else:
                    doc = nlp.make_doc(clean)
                if len(doc) > max_tokens:
                    stats.split += 1
                    docs.extend(doc[i : i + max_tokens].as_doc() for i in range(0, len(doc), max_tokens))
                else:
                    docs.append(doc)
    stats.docs, stats.tokens = len(docs), sum(len(d) for d in docs)
    msg.info(f"{', '.join(str(p) for p in inputs)}: {stats.lines} lines -> {stats.docs} docs, {stats.tokens} tokens; "
             f"skipped {stats.empty} empty lines; repaired {stats.invalid_utf8} lines with invalid UTF-8 and "
             f"{stats.control_chars} with control characters; split {stats.split} lines over {max_tokens} tokens")
    if check and dataset and (not limit or stats.lines < limit):  # a limit that cut the file defeats the check
        if dataset not in EXPECTED_LINES:
            raise CountMismatch(f"No documented line count for {dataset!r}; known: {sorted(EXPECTED_LINES)}")
        if stats.lines != EXPECTED_LINES[dataset]:
            raise CountMismatch(f"{dataset}: {stats.lines} non-empty lines, the data README says "
                                f"{EXPECTED_LINES[dataset]}; pass --no-check for custom data.")
        msg.good(f"{dataset}: line count matches the data README")
    elif check and dataset:
        msg.warn(f"--limit {limit} cut the text short, so the line count is not checked")
    write_docs(docs, output)
    return stats


# ---------------------------------------------------------------------------------------------------------------
# Commands

IN_DIR = Arg(..., exists=True, file_okay=False, help="Folder with the dataset's raw files (assets/<dataset>)")
OUT_DIR = Arg(..., file_okay=False, help="Output folder for {train,dev,test}.spacy (corpus/<dataset>)")
CHECK = Opt(True, "--check/--no-check", help="Check counts against the data README (off for custom data)")
SEED = Opt(0, "--seed", help="Seed for the dev split")


@app.command("conll2003")
def conll2003_cli(input_dir: Path = IN_DIR, output_dir: Path = OUT_DIR,
                  n_sents: int = Opt(1, "--n-sents", "-n", help="Sentences per doc: 1 = sentences, 0 = original documents"),
                  check: bool = CHECK) -> None:
    """CoNLL-2003 English (IOB1) through spaCy's ner converter."""
    _run(convert_conll2003, input_dir, output_dir, n_sents=n_sents, check=check)


@app.command("wnut17")
def wnut17_cli(input_dir: Path = IN_DIR, output_dir: Path = OUT_DIR, check: bool = CHECK) -> None:
    """WNUT-17 (IOB2)."""
    _run(convert_wnut17, input_dir, output_dir, check=check)


@app.command("weibo")
def weibo_cli(input_dir: Path = IN_DIR, output_dir: Path = OUT_DIR,
              named_only: bool = Opt(False, "--named-only", help="Map *.NOM mentions to O"),
              check: bool = CHECK) -> None:
    """Weibo NER (character tokens, position digits stripped; IOB2)."""
    _run(convert_weibo, input_dir, output_dir, named_only=named_only, check=check)


@app.command("resume")
def resume_cli(input_dir: Path = IN_DIR, output_dir: Path = OUT_DIR, check: bool = CHECK) -> None:
    """Resume NER (character tokens; BMES)."""
    _run(convert_resume, input_dir, output_dir, check=check)


@app.command("msra")
def msra_cli(input_dir: Path = IN_DIR, output_dir: Path = OUT_DIR,
             dev_fraction: float = Opt(0.05, "--dev-fraction", help="Share of train sentences drawn as dev", min=0.0, max=0.5),
             seed: int = SEED, limit: int = Opt(0, "--limit", help="First N sentences of each file only (no check)", min=0),
             check: bool = CHECK) -> None:
    """MSRA (character tokens; IOB2); dev drawn from train with a fixed seed and recorded in split.json."""
    _run(convert_msra, input_dir, output_dir, dev_fraction=dev_fraction, seed=seed, limit=limit, check=check)


@app.command("semeval")
def semeval_cli(input_dir: Path = IN_DIR, output_dir: Path = OUT_DIR,
                dev_fraction: float = Opt(0.1, "--dev-fraction", help="Share of train reviews drawn as dev", min=0.0, max=0.5),
                seed: int = SEED, check: bool = CHECK) -> None:
    """SemEval-2016 ABSA restaurants: aspect terms as ASPECT entities; dev reviews recorded in split.json."""
    _run(convert_semeval, input_dir, output_dir, dev_fraction=dev_fraction, seed=seed, check=check)


@app.command("text")
def text_cli(inputs: List[Path] = Arg(..., exists=True, dir_okay=False, help="Text files, one sentence per line"),
             output: Path = Opt(..., "--output", "-o", help="Output .spacy file"),
             lang: str = Opt("en", "--lang", help="Language of the blank tokenizer"),
             chars: bool = Opt(False, "--chars", help="One token per character (Chinese)"),
             limit: int = Opt(0, "--limit", help="First N non-empty lines only (0 = all)", min=0),
             max_tokens: int = Opt(512, "--max-tokens", help="Split longer lines into pieces of this size", min=1),
             dataset: str = Opt("", "--dataset", help="Check the line count documented for this dataset"),
             check: bool = CHECK) -> None:
    """Unlabeled text -> .spacy docs without entities (never crashes on bad lines; reports what it repaired)."""
    _run(convert_text, inputs, output, lang=lang, chars=chars, limit=limit, max_tokens=max_tokens,
         dataset=dataset, check=check)


if __name__ == "__main__":
    app()
