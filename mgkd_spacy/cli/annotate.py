"""``mgkd annotate``: teacher k-best surrogates for a corpus, in resumable, independently schedulable shards."""
import hashlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple, Union

import spacy
import srsly
import typer
from spacy.tokens import Doc, DocBin
from wasabi import msg

from ..annotate import annotate_docs, teacher_component
from ..readers import read_docs
from .fetch import md5

Arg = typer.Argument
Opt = typer.Option


def parse_shard(shard: str) -> Tuple[int, int]:
    """'i/N' -> (i, N) with 0 <= i < N."""
    match = re.fullmatch(r"(\d+)/(\d+)", shard)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise typer.BadParameter(f"--shard must look like i/N with 0 <= i < N (e.g. 0/4); got {shard!r}.")
    return int(match.group(1)), int(match.group(2))


def chunk_path(output_dir: Path, chunk: int) -> Path:
    return output_dir / f"part-{chunk:05d}.spacy"


def recipe_path(chunk: Path) -> Path:
    """The JSON beside a chunk that records what it was made from."""
    return chunk.with_suffix(".json")


def checksum(path: Path) -> str:
    """md5 of a file, or of a directory's files (relative names and their md5s, in sorted order)."""
    if path.is_file():
        return md5(path)
    digest = hashlib.md5()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)} {md5(file)}\n".encode())
    return digest.hexdigest()


def write_atomically(content: Union[List[Doc], Dict], path: Path) -> None:
    """Write a DocBin (with user data) or a JSON to a temporary file, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(content, dict):
        srsly.write_json(tmp, content)
    else:
        DocBin(docs=content, store_user_data=True).to_disk(tmp)
    os.replace(tmp, path)


def is_done(chunk: Path, recipe: Dict) -> bool:
    """Whether ``chunk`` exists and was made from ``recipe`` (same teacher, input and settings)."""
    return chunk.exists() and recipe_path(chunk).exists() and srsly.read_json(recipe_path(chunk)) == recipe


def annotate_cli(
    teacher: Path = Arg(..., help="Trained teacher pipeline directory (transformer + distilled_ner)", exists=True),
    input_path: Path = Arg(..., help=".spacy file or directory of them to annotate", exists=True),
    output_dir: Path = Arg(..., help="Directory for the annotated shards (part-NNNNN.spacy)"),
    k: int = Opt(15, "--k", "-k", help="Number of best sequences to keep per sentence", min=1),
    shard: str = Opt("0/1", "--shard", help="Process only chunks j with j % N == i, given as i/N"),
    chunk_size: int = Opt(2000, "--chunk-size", help="Docs per output file (the unit of resumption)", min=1),
    batch_size: int = Opt(64, "--batch-size", help="Docs per teacher forward pass", min=1),
    token_targets: bool = Opt(True, "--token-targets/--no-token-targets", help="Also store emissions and marginals"),
    gpu_id: int = Opt(-1, "--gpu-id", help="GPU to run the teacher on; -1 for CPU"),
) -> None:
    """Annotate a corpus with a teacher's k-best surrogates. Finished chunks are skipped, so an interrupted run
    resumes where it stopped; each chunk is written atomically, so no partial file is ever left in place.

    Beside each chunk, part-NNNNN.json records what it was made from (checksums of the teacher and the input, k,
    chunk size, token targets); a chunk made from anything else (e.g. before the teacher was retrained) is annotated
    again, and chunks beyond the end of the input are removed, so the directory never mixes teachers or inputs."""
    index, n_shards = parse_shard(shard)
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = spacy.load(teacher)
    teacher_component(nlp)
    docs = list(read_docs([input_path], nlp))
    output_dir.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(docs) + chunk_size - 1) // chunk_size
    chunks = [j for j in range(n_chunks) if j % n_shards == index]
    recipe = {"teacher": checksum(teacher), "input": checksum(input_path), "k": k, "chunk_size": chunk_size,
              "token_targets": token_targets}
    todo = [j for j in chunks if not is_done(chunk_path(output_dir, j), recipe)]
    stale = [j for j in todo if chunk_path(output_dir, j).exists()]
    beyond = [path for path in output_dir.glob("part-*.spacy")
              if (match := re.fullmatch(r"part-(\d+)", path.stem)) and int(match[1]) >= n_chunks and int(match[1]) % n_shards == index]
    msg.info(f"{len(docs)} docs, {len(chunks)} chunks in shard {index}/{n_shards}, {len(chunks) - len(todo)} already done")
    if stale:
        msg.warn(f"{len(stale)} chunk(s) in {output_dir} were made from another teacher, input or settings (or have no "
                 f"record of it): annotating them again")
    for path in beyond:
        msg.warn(f"Removing {path}: the input has only {n_chunks} chunks of {chunk_size} docs")
        path.unlink()
        recipe_path(path).unlink(missing_ok=True)
    started = time.time()
    n_words = 0
    for done, j in enumerate(todo, 1):
        chunk = docs[j * chunk_size : (j + 1) * chunk_size]
        recipe_path(chunk_path(output_dir, j)).unlink(missing_ok=True)
        write_atomically(annotate_docs(nlp, chunk, k, batch_size, token_targets), chunk_path(output_dir, j))
        write_atomically(recipe, recipe_path(chunk_path(output_dir, j)))
        n_words += sum(len(doc) for doc in chunk)
        rate = n_words / max(time.time() - started, 1e-9)
        print(f"chunk {j}: {done}/{len(todo)} written ({rate:.0f} words/s)", file=sys.stderr, flush=True)
    msg.good(f"Shard {index}/{n_shards} complete: {len(chunks)} chunks in {output_dir}")
