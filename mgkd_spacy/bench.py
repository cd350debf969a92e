"""Benchmarks: ``python -m mgkd_spacy.bench crf`` times the batched CRF ops against a per-sentence k-best loop."""
import functools
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import typer

from .crf import build_constraints, constrain, kbest_viterbi, log_partition, ops, tags_for_labels, viterbi

app = typer.Typer(help=__doc__, no_args_is_help=True)
# (tags, scheme, entity types) for the three tag-set sizes
TAG_SETS = {9: ("BIO", 4), 17: ("BIO", 8), 37: ("BILUO", 9)}


def loop_kbest(emissions: torch.Tensor, transitions: torch.Tensor, start: torch.Tensor, end: torch.Tensor, k: int) -> List[Tuple[float, List[int]]]:
    """Reference k-best for ONE sentence, one position at a time, as AllenNLP's ``viterbi_decode(top_k=...)`` does.

    emissions (Floats2d): (n, L); transitions (L, L) [i -> j]; start, end (L,). At each position every tag keeps
    the K best (rank, previous tag) extensions out of all R x L ranked prefixes (``topk`` over a (R * L, L) view),
    which is exact. RETURNS (List[Tuple[float, List[int]]]): up to k (score, tags) pairs, best first, finite only.
    """
    n, n_tags = emissions.shape
    if n == 0:
        return [(0.0, [])]
    # shape: (R, L) ranked prefix scores ending in each tag (R grows to k)
    scores = (start + emissions[0])[None, :]
    pointers = []
    for t in range(1, n):
        # shape: (R * L, L) row rank * L + previous tag
        summed = (scores[:, :, None] + transitions[None]).reshape(-1, n_tags)
        top, index = summed.topk(min(k, summed.shape[0]), dim=0)
        scores = top + emissions[t][None, :]
        pointers.append(index.tolist())
    best, cells = (scores + end[None, :]).reshape(-1).topk(min(k, scores.numel()))
    out = []
    for score, cell in zip(best.tolist(), cells.tolist()):
        if score == float("-inf"):
            break
        rank, tag = divmod(cell, n_tags)
        path = [tag]
        for pointer in reversed(pointers):
            rank, tag = divmod(pointer[rank][tag], n_tags)
            path.append(tag)
        out.append((score, path[::-1]))
    return out


def _median_seconds(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Median seconds per call of each function, after one warm-up call each.

    The calls are interleaved (one of each per repeat), so that a burst of load from elsewhere on a shared machine
    slows every function alike instead of whichever was being timed then.
    """
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def run_crf(batch: int, lengths: Sequence[int], n_tags_list: Sequence[int], ks: Sequence[int], loop_sentences: int, repeats: int) -> List[dict]:
    """Tokens/s of each op per (length, tag count); the loop baseline is timed on ``loop_sentences`` sentences."""
    rows = []
    for n_tags in n_tags_list:
        scheme, n_types = TAG_SETS.get(n_tags, ("BIO", (n_tags - 1) // 2))
        tags = tags_for_labels([f"T{i}" for i in range(n_types)], scheme)
        g = torch.Generator().manual_seed(0)
        potentials = constrain(*(torch.randn(s, generator=g) for s in ((len(tags), len(tags)), (len(tags),), (len(tags),))),
                               build_constraints(tags, scheme))
        for length in lengths:
            emissions = torch.randn(batch, length, len(tags), generator=g)
            lens = torch.full((batch,), length)
            tokens = batch * length
            timed = {"log Z": lambda: log_partition(emissions, lens, *potentials),
                     "viterbi": lambda: viterbi(emissions, lens, *potentials)}
            timed.update({f"k={k}": functools.partial(kbest_viterbi, emissions, lens, *potentials, k) for k in ks})
            row = {"T": len(tags), "length": length}
            row.update({name: tokens / seconds for name, seconds in _median_seconds(timed, repeats).items()})
            k_max = max(ks)
            subset = emissions[:loop_sentences]
            (seconds,) = _median_seconds({"loop": lambda: [loop_kbest(e, *potentials, k_max) for e in subset]}, 1).values()
            row[f"loop k={k_max}"] = loop_sentences * length / seconds
            rows.append(row)
    return rows


def write_markdown(rows: List[dict], ks: Sequence[int], batch: int, loop_sentences: int, command: str, out: Path, backend: str) -> None:
    """Write the tokens/s table, with the machine, the command and a pass/fail column per target."""
    k_max = max(ks)
    header = ["T", "length", "log Z", "viterbi"] + [f"k={k}" for k in ks] + [f"loop k={k_max}", f"k={k_max} / viterbi time", f"k={k_max} speedup vs loop"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        "# CRF operation benchmark",
        "",
        f"Command: `{command}`  ",
        f"Date: {date.today()}; machine: 2 CPU cores, no GPU ({platform.machine()} {platform.processor() or ''}); "
        f"torch {torch.__version__}, torch.set_num_threads({torch.get_num_threads()}); load average at the end "
        f"(1, 5, 15 min): {load}; batch B={batch}, float32 random emissions, scheme constraints "
        "(T=9, 17: BIO with 4, 8 types; T=37: BILUO with 9 types).  ",
        f"Backend: {backend}.",
        "",
        "Figures are real tokens per second (B x length / seconds, median of the repeats after one warm-up call; "
        "the ops of a row take turns within each repeat). "
        "`k=K` is `kbest_viterbi`, which includes computing log Z for exact probabilities. The per-sentence loop is an "
        "exact reference k-best that loops over sentences and positions in torch ops (AllenNLP's "
        f"`viterbi_decode(top_k=...)` style, `loop_kbest` in `mgkd_spacy/bench.py`), timed on {loop_sentences} "
        "sentences and extrapolated per token. Targets: batched k="
        f"{k_max} costs at most 4x Viterbi's time, and is at least 10x faster than the loop.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        ratio = row["viterbi"] / row[f"k={k_max}"]
        speedup = row[f"k={k_max}"] / row[f"loop k={k_max}"]
        cells = [str(row["T"]), str(row["length"])] + [f"{row[h]:,.0f}" for h in header[2:-2]]
        cells += [f"{ratio:.2f} ({'ok' if ratio <= 4 else 'MISSED'})", f"{speedup:.0f}x ({'ok' if speedup >= 10 else 'MISSED'})"]
        lines.append("| " + " | ".join(cells) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


@app.command("crf")
def crf_command(
    out: Path = typer.Option(Path("docs/benchmarks/crf.md"), help="Markdown file to write"),
    batch: int = typer.Option(64, help="Sentences per batch"),
    lengths: str = typer.Option("16,64,256", help="Sentence lengths, comma-separated"),
    tags: str = typer.Option("9,17,37", help="Tag-set sizes, comma-separated"),
    ks: str = typer.Option("1,5,15", help="k values, comma-separated"),
    loop_sentences: int = typer.Option(8, help="Sentences timed with the per-sentence loop"),
    repeats: int = typer.Option(3, help="Timed repeats per figure"),
    threads: int = typer.Option(2, help="torch.set_num_threads"),
    kernel: bool = typer.Option(True, help="Use the C kernel where it serves (--no-kernel: the torch code, as on CUDA)"),
) -> None:
    """Tokens/s of log Z, Viterbi and k-best, batched vs a per-sentence loop; writes a markdown table."""
    torch.set_num_threads(threads)
    try:
        backend_switch = ops.use_kernel(kernel)
    except ValueError as err:
        raise typer.BadParameter(f"{err}; or pass --no-kernel to time the torch code")
    backend = "the C kernel (`mgkd_spacy/crf/_kernel.c`) for log Z, Viterbi and k-best" if kernel else (
        "the torch code (`--no-kernel`: what runs on CUDA and where the kernel is not built)")
    parse = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    with backend_switch:
        rows = run_crf(batch, parse(lengths), parse(tags), parse(ks), loop_sentences, repeats)
    command = (f"python -m mgkd_spacy.bench crf --out {out} --batch {batch} --lengths {lengths} --tags {tags} --ks {ks} "
               f"--loop-sentences {loop_sentences} --repeats {repeats} --threads {threads}{'' if kernel else ' --no-kernel'}")
    write_markdown(rows, parse(ks), batch, loop_sentences, command, out, backend)
    print(out.read_text())


@app.command("version")
def version() -> None:
    """Print the package version."""
    from . import __version__

    print(__version__)


if __name__ == "__main__":
    app()
