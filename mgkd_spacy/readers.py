"""``mgkd.PooledCorpus.v1``: labeled docs pooled with teacher-annotated unlabeled docs, tokens kept as stored."""
import random
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Union

from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry


def _spacy_files(path: Union[str, Path]) -> List[Path]:
    """The ``.spacy`` files at ``path`` (a file, or a directory searched recursively, sorted)."""
    path = Path(path)
    if path.is_dir():
        return sorted(path.rglob("*.spacy"))
    if path.exists():
        return [path]
    raise ValueError(f"Corpus path {path} does not exist; run the conversion/annotation step that writes it.")


def read_docs(paths: Iterable[Union[str, Path]], nlp: Language) -> Iterator[Doc]:
    """Docs (with user data, so teacher surrogates survive) from ``.spacy`` files or directories of them."""
    for path in paths:
        for file in _spacy_files(path):
            yield from DocBin(store_user_data=True).from_disk(file).get_docs(nlp.vocab)


def _example(reference: Doc) -> Example:
    """An Example whose predicted doc has exactly the reference's tokens (needed to align teacher surrogates)."""
    words = [token.text for token in reference]
    spaces = [bool(token.whitespace_) for token in reference]
    return Example(Doc(reference.vocab, words=words, spaces=spaces), reference)


@registry.readers("mgkd.PooledCorpus.v1")
def create_pooled_corpus(
    path: str, extra: Optional[List[str]] = None, extra_limit: int = 0, max_length: int = 0, seed: int = 0
) -> Callable[[Language], Iterator[Example]]:
    """Read ``path`` (labeled, possibly annotated by a teacher) plus ``extra`` corpora (teacher-annotated
    unlabeled text, for data augmentation) as Examples that keep the stored tokenization.

    path (str): a ``.spacy`` file or a directory of them.
    extra (List[str]): more files/directories; empty = no augmentation.
    extra_limit (int): use at most this many extra docs (0 = all), drawn with ``seed`` - the amount of
        unlabeled data in the F1-vs-unlabeled-size experiment.
    max_length (int): skip docs longer than this many tokens (0 = no limit).
    """
    if extra_limit < 0 or max_length < 0:
        raise ValueError("extra_limit and max_length must be >= 0.")

    def read(nlp: Language) -> Iterator[Example]:
        extras: Iterable[Doc] = read_docs(extra or [], nlp)
        if extra_limit:
            pool = list(extras)
            random.Random(seed).shuffle(pool)
            extras = pool[:extra_limit]
        for docs in (read_docs([path], nlp), extras):
            for doc in docs:
                if len(doc) and (not max_length or len(doc) <= max_length):
                    yield _example(doc)

    return read
