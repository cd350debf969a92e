"""``mgkd report``: the paper's tables and figures (mean ± std over seeds) from the metrics of a dataset."""
import json
import re
import statistics
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import typer
from wasabi import msg

from ..training_logger import META_KEY

BASELINE = "<--baseline>"  # in Section.versus: the row named by the --baseline option
SEED_FILE = re.compile(r"(.+)_seed([0-9]+)")  # <row>_seed<N>.json; <row>.json is seed 0 (or <row>_seed0.json)
SPEED_FILE = re.compile(r"speed(_\w+)?")  # speed.json (the `speed` step) and speed_<name>.json (e.g. `mpnet-speed`)
LONGER = re.compile(r"(.+)_steps([0-9]+)")  # <row>_steps<N>: the row's command with --training.max_steps N (run_seed.py --steps)
# Sweep points run with the default setting are the main-table row when they have no row of their own.
STAND_INS = {"k15": "te_da_seq", "da0": "te_seq"}  # plus da<N> -> te_da_seq, N from --unlabeled-all


class Section(NamedTuple):
    """One table of the report. ``rows`` are (metrics row, label); in figures the label is the x value."""

    title: str
    note: str
    rows: Tuple[Tuple[str, str], ...]
    versus: Optional[Tuple[str, str]] = None  # (column header, row): F1 difference against that row
    figure: Optional[Tuple[str, str]] = None  # (x axis name, PNG name suffix)


SECTIONS = (
    Section("Table 1: main results", "Students are BiLSTM+CRF; TE = teacher embeddings, DA = unlabeled data annotated by the teacher.", (
        ("teacher", "Teacher (transformer + CRF)"), ("peer_spacy_cnn", "spaCy ner, CNN (efficiency config)"),
        ("peer_spacy_trf", "spaCy ner on the same transformer"), ("vanilla", "Vanilla BiLSTM+CRF"), ("te", "+TE"),
        ("te_token_em", "+TE +TOKEN-EM"), ("te_token_pos", "+TE +TOKEN-POS"), ("te_seq", "+TE +SEQ"),
        ("te_da_token_em", "+TE +DA +TOKEN-EM"), ("te_da_token_pos", "+TE +DA +TOKEN-POS"), ("te_da_seq", "+TE +DA +SEQ"),
    ), versus=("gain over", BASELINE)),
    Section("Table 2: loss combinations (TE, no DA)", "SEQ distillation with one loss term added or removed.", (
        ("te_seq", "all: hard + k-best CE + fuzzy"), ("seq_token_pos", "all + TOKEN-POS"),
        ("seq_no_fuzzy", "all - fuzzy"), ("seq_no_kbest", "all - k-best CE"),
    ), versus=("change vs", "te_seq")),
    Section("Table 3: loss weighting", "TE +SEQ losses combined with learned uncertainty weights or equal weights.", (
        ("te_seq", "auto (uncertainty), no DA"), ("te_seq_equal", "equal, no DA"),
        ("te_da_seq", "auto, DA"), ("te_da_seq_equal", "equal, DA"),
    )),
    Section("Figure 4: F1 vs K", "TE +DA +SEQ with teacher_k=K (rows k<K>); te_da_seq (K=15) stands in when there is no k15 row.",
            (("k1", "1"), ("k3", "3"), ("k5", "5"), ("k10", "10"), ("k15", "15")), figure=("K", "k")),
    Section("Figure 5: F1 vs unlabeled sentences", "TE +DA +SEQ with N teacher-annotated unlabeled sentences (rows da<N>); "
            "te_seq stands in for N=0, te_da_seq (all annotated sentences, --unlabeled-all) for that N.",
            (("da0", "0"), ("da2000", "2000"), ("da10000", "10000"), ("da30000", "30000")), figure=("unlabeled sentences", "da")),
    Section("BERT-base-size teacher", "The MPNet teacher (all-mpnet-base-v2 + CRF, the paper's teacher size; `mpnet` workflow) "
            "and students distilled from it (TE: its frozen 768-wide word-piece embeddings).", (
        ("teacher_mpnet", "MPNet teacher"), ("mpnet_te_seq", "+TE +SEQ student of the MPNet teacher"),
        ("mpnet_te_token_em", "+TE +TOKEN-EM student of the MPNet teacher"),
        ("mpnet_te_da_seq", "+TE +DA +SEQ student of the MPNet teacher (DA: 10,000 sentences)"),
        ("mpnet_te_da30k_seq", "+TE +DA +SEQ student of the MPNet teacher (DA: 30,000 sentences, 6,000 steps)"),
        ("mpnet_te_da_token_em", "+TE +DA +TOKEN-EM student of the MPNet teacher (DA: 10,000 sentences)"),
        ("mpnet_seq_token_em", "+TE +SEQ +TOKEN-EM student of the MPNet teacher"),
        ("mpnet_da30k_seq_token_em", "+TE +DA +SEQ +TOKEN-EM student of the MPNet teacher (DA: 30,000 sentences, 6,000 steps)"),
        ("mpnet_te_seq_bf16", "+TE +SEQ student of the MPNet teacher, bfloat16"),
        ("mpnet_te_seq_int8", "+TE +SEQ student of the MPNet teacher, int8"),
    ), versus=("change vs", "teacher_mpnet")),
    Section("Tagging precision", "The same students tagging with their BiLSTM in float32, bfloat16 and int8 (`mgkd precision`, "
            "rows <row>_bf16 and <row>_int8); their words/s are in Table 4.", (
        ("te_seq", "+TE +SEQ, float32"), ("te_seq_bf16", "+TE +SEQ, bfloat16"), ("te_seq_int8", "+TE +SEQ, int8"),
        ("te_da_seq", "+TE +DA +SEQ, float32"), ("te_da_seq_bf16", "+TE +DA +SEQ, bfloat16"), ("te_da_seq_int8", "+TE +DA +SEQ, int8"),
    )),
)


class Score(NamedTuple):
    """Mean, sample standard deviation and number of seeds of one score (x100)."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.2f}" + (f" ± {self.std:.2f} (n={self.n})" if self.n > 1 else "")


Rows = Dict[str, Tuple[Score, Score, Score]]  # {row: (P, R, F1)}
Times = Dict[str, Dict[int, Optional[float]]]  # {row: {seed: training seconds, None where the metrics have none}}


def _commit() -> str:
    """Short hash of HEAD, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_rows(metrics_dir: Path) -> Tuple[Rows, Times]:
    """{row: (P, R, F1)} for the rows in ``metrics_dir`` (``mgkd evaluate`` JSON; speed*.json aside), and each row's seeds
    with their training seconds (in the JSON of pipelines trained with mgkd.TimedConsoleLogger.v1)."""
    runs: Dict[str, Dict[int, Tuple[str, dict]]] = {}
    skipped = []
    for path in sorted(metrics_dir.glob("*.json")):
        if SPEED_FILE.fullmatch(path.stem):
            continue
        scores = json.loads(path.read_text())
        if not (isinstance(scores, dict) and all(key in scores for key in ("ents_p", "ents_r", "ents_f"))):
            skipped.append(path.name)
            continue
        match = SEED_FILE.fullmatch(path.stem)
        row, seed = (match[1], int(match[2])) if match else (path.stem, 0)
        if seed in runs.setdefault(row, {}):
            msg.fail(f"{runs[row][seed][0]} and {path.name} are both seed {seed} of the row '{row}' in {metrics_dir}; "
                     f"remove or rename one (seed 0 is <row>.json or <row>_seed0.json, seed N is <row>_seedN.json).", exits=1)
        runs[row][seed] = (path.name, scores)
    if skipped:
        msg.warn(f"Not rows (no ents_p/ents_r/ents_f), left out: {', '.join(skipped)}")
    rows = {row: aggregate([scores for _, scores in seeds.values()]) for row, seeds in sorted(runs.items())}
    times = {row: {seed: scores.get(META_KEY, {}).get("seconds") for seed, (_, scores) in sorted(seeds.items())}
             for row, seeds in runs.items()}
    return rows, times


def aggregate(seeds: List[dict]) -> Tuple[Score, Score, Score]:
    """P, R and F1 (x100) of one row: mean and sample std over its seeds."""

    def score(key: str) -> Score:
        values = [100 * scores[key] for scores in seeds]
        return Score(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))

    return score("ents_p"), score("ents_r"), score("ents_f")


def longer_section(rows: Rows) -> Section:
    """The rows <row>_steps<N> (a row trained for N steps), labelled after the row, in the order of the tables."""
    labels: Dict[str, str] = {}  # a row's label in the first table that has it, in table order
    for section in SECTIONS:
        if not section.figure:
            for row, label in section.rows:
                labels.setdefault(row, label)
    rank = {row: i for i, row in enumerate(labels)}
    longer = sorted(((match[1], int(match[2]), row) for row in rows if (match := LONGER.fullmatch(row)) and match[1] in labels),
                    key=lambda item: (rank[item[0]], item[1]))
    return Section("Rows trained for more steps", "Rows <row>_steps<N>: the row's training command with "
                   "--training.max_steps N (`scripts/run_seed.py ... --steps N`), the rest unchanged.",
                   tuple((row, f"{labels[base]}, {steps:,} steps") for base, steps, row in longer), versus=("gain over", BASELINE))


def present_rows(section: Section, rows: Rows, stand_ins: Dict[str, str]) -> List[Tuple[str, str]]:
    """(row, label) of the section's rows that exist, stand-ins filling in a figure's missing points.

    A section none of whose own rows exists is left out (a figure is not drawn from stand-ins alone)."""
    if not any(row in rows for row, _ in section.rows):
        return []
    present = []
    for row, label in section.rows:
        if row in rows:
            present.append((row, label))
        elif section.figure and stand_ins.get(row) in rows:
            present.append((stand_ins[row], f"{label} ({stand_ins[row]})"))
    return present


def duration(seconds: float) -> str:
    """Seconds as "42 s", "17 min" or "1 h 05 min"."""
    minutes = round(seconds / 60)
    return f"{seconds:.0f} s" if seconds < 60 else f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def wall_time_note(present: List[Tuple[str, str]], times: Times) -> str:
    """The total training time of a section's rows, over the seeds that recorded it."""
    seconds = [time for row in dict.fromkeys(row for row, _ in present) for time in times[row].values()]
    recorded = [time for time in seconds if time is not None]
    timed, total = len(recorded), len(seconds)
    if not timed:
        return f"Training wall time: not recorded for its {total} training{'s' * (total != 1)} (not trained with mgkd.TimedConsoleLogger.v1)."
    untimed = f"; {total - timed} more without a record" if timed < total else ""
    return (f"Training wall time: {duration(sum(recorded))} for {timed} training{'s' * (timed != 1)}"
            f"{untimed} (spacy train's seconds from the first update to the last evaluation, initialization excluded).")


def figure_caption(present: List[Tuple[str, str]], times: Times, command: str, commit: str) -> str:
    """What a figure was made from: command, commit, the seeds of each point and the training wall time."""
    seeds = "; ".join(f"{label.split()[0]}: seed{'s' * (len(times[row]) > 1)} {', '.join(map(str, times[row]))}" for row, label in present)
    return f"Made by `{command}` at commit {commit}; {seeds}. {wall_time_note(present, times)}"


def header_lines(columns: List[str]) -> List[str]:
    """A markdown table's header row and its rule row, one cell per column."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def table(section: Section, present: List[Tuple[str, str]], rows: Rows, baseline: str, times: Times) -> List[str]:
    """Markdown lines of one section: title, note and P/R/F1 per row (plus the F1 difference column, and the mean
    training time per seed with the section's total when any row recorded one)."""
    header, versus = section.versus or ("", "")
    versus = baseline if versus == BASELINE else versus
    timed = any(time is not None for row, _ in present for time in times[row].values())
    columns = ([section.figure[0] if section.figure else "model", "P", "R", "F1"] + ([f"{header} {versus}"] if versus in rows else [])
               + (["training time"] if timed else []))
    lines = [f"## {section.title}", "", section.note, ""] + header_lines(columns)
    for row, label in present:
        cells = [label] + [str(score) for score in rows[row]]
        if versus in rows:
            cells.append("" if row == versus else f"{rows[row][2].mean - rows[versus][2].mean:+.2f}")
        if timed:
            recorded = [time for time in times[row].values() if time is not None]
            cells.append(duration(statistics.mean(recorded)) if recorded else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""] + ([wall_time_note(present, times), ""] if timed and not section.figure else [])


def crowded(xs: List[float]) -> bool:
    """Whether two neighbouring x values lie closer than a tenth of the range, so that their tick labels collide
    on a linear axis (0, 2,000 and 30,000 unlabeled sentences); the plot then uses a symlog axis."""
    xs = sorted(xs)
    gaps = [b - a for a, b in zip(xs, xs[1:])]
    return bool(gaps) and min(gaps) < 0.1 * (xs[-1] - xs[0])


def plot(points: List[Tuple[float, Score]], xlabel: str, out: Path) -> None:
    """F1 against x, with error bars (sample std) where a point has several seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    xs = [x for x, _ in points]
    ax.errorbar(xs, [f1.mean for _, f1 in points], yerr=[f1.std for _, f1 in points], marker="o", capsize=3)
    if crowded(xs):
        ax.set_xscale("symlog", linthresh=min(x for x in xs if x > 0))
    ax.set_xticks(xs, labels=[f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test F1")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def teacher_name(model: str) -> Optional[str]:
    """The teacher folder's name, e.g. teacher_mpnet for training/conll2003/teacher_mpnet/model-best or for
    training/conll2003/teacher_mpnet; None for a pipeline that is not a teacher."""
    return next((part for part in reversed(Path(model).parts[-2:]) if part.startswith("teacher")), None)


def pipeline_name(model: str) -> str:
    """The pipeline's folder name, e.g. te_seq for training/conll2003/te_seq/model-best or training/conll2003/te_seq."""
    parts = Path(model).parts
    return parts[-2] if parts[-1] in ("model-best", "model-last") and len(parts) > 1 else parts[-1]


def speed_table(speed: List[dict], source: str) -> List[str]:
    """Table 4 from one ``mgkd speed`` JSON: words/s relative to each teacher (a pipeline whose folder, or the one
    above it as in teacher/model-best, is named ``teacher*``; else the first pipeline), parameters and size."""
    references = [(name, r) for r in speed if (name := teacher_name(r["model"]))] or [(pipeline_name(speed[0]["model"]), speed[0])]
    title = "## Table 4: efficiency" + ("" if source == "speed.json" else f" ({source})")
    models = " and ".join(f"`{r['model']}`" for _, r in references)
    columns = (["pipeline", "words/s"] + [f"vs {name}" for name, _ in references]
               + ["trainable params", "total params", "disk MB", "batch size", "threads", "entity scores", "BiLSTM precision"])
    lines = [title, "", f"Inference speed relative to {models}; disk MB = 10^6 bytes.", ""] + header_lines(columns)
    for r in speed:
        relative = " | ".join(f"{r['words_per_second'] / ref['words_per_second']:.2f}x" for _, ref in references)
        lines.append(f"| {r['model']} | {r['words_per_second']:,.0f} | {relative} | {r['trainable_params']:,} | {r['total_params']:,} "
                     f"| {r['disk_bytes'] / 1e6:.1f} | {r['batch_size']} | {r['threads']} | {'yes' if r.get('entity_scores') else 'no'} "
                     f"| {r.get('lstm_precision') or '-'} |")
    return lines + [""]


def report_cli(
    dataset: str = typer.Argument(..., help="Dataset name (reports/<dataset>.md)"),
    metrics_dir: Path = typer.Argument(..., exists=True, help="Directory of <row>.json (and <row>_seed<N>.json) from spacy evaluate"),
    output_dir: Path = typer.Option(Path("reports"), help="Where to write the markdown and PNGs"),
    baseline: str = typer.Option("vanilla", help="Row the gains in Table 1 are computed against"),
    command: str = typer.Option("", help="The command/workflow that produced the metrics (recorded)"),
    unlabeled_all: int = typer.Option(30000, help="Unlabeled sentences the te_da_seq row was trained with (its point in Figure 5)", min=1),
) -> None:
    """Write <output-dir>/<dataset>.md with the paper's tables (mean ± std over seeds) and the F1 vs K / unlabeled size plots."""
    rows, times = load_rows(metrics_dir)
    if not rows:
        msg.fail(f"No metrics (<row>.json) in {metrics_dir}; run the evaluate steps first.", exits=1)
    output_dir.mkdir(parents=True, exist_ok=True)
    seeded = [f"{row} (n={scores[0].n})" for row, scores in rows.items() if scores[0].n > 1]
    command, commit = command or "mgkd report", _commit()
    lines = [f"# {dataset}: test results", "", f"Generated {datetime.now():%Y-%m-%d %H:%M} at commit {commit} "
             f"by `{command}` from `{metrics_dir}`.", "",
             f"Seeds: {', '.join(seeded) + '; other rows one seed' if seeded else 'one per row'}.", "",
             "Scores are test-set entity P/R/F1 x 100: the mean over seeds, ± the sample standard deviation when n >= 2; "
             "gains and changes are differences of mean F1.", ""]
    used = set()
    stand_ins = {**STAND_INS, f"da{unlabeled_all}": "te_da_seq"}
    for section in SECTIONS[:1] + (longer_section(rows),) + SECTIONS[1:]:
        if section.figure and section.figure[1] == "da" and f"da{unlabeled_all}" not in dict(section.rows):
            points = section.rows + ((f"da{unlabeled_all}", str(unlabeled_all)),)
            section = section._replace(rows=tuple(sorted(points, key=lambda point: int(point[1]))))
        present = present_rows(section, rows, stand_ins)
        if all(row in used for row, _ in present):
            continue  # nothing here that an earlier table has not shown (e.g. Table 3 with only the Table 1 rows)
        used.update(row for row, _ in present)
        lines += table(section, present, rows, baseline, times)
        if section.figure:
            png = output_dir / f"{dataset}_f1_vs_{section.figure[1]}.png"
            plot([(float(label.split()[0]), rows[row][2]) for row, label in present], section.figure[0], png)
            lines += [f"![F1 vs {section.figure[0]}]({png.name})", "", figure_caption(present, times, command, commit), ""]
    others = Section("Other rows", "Rows in the metrics directory that none of the tables above uses.",
                     tuple((row, row) for row in rows if row not in used))
    if others.rows:
        lines += table(others, present_rows(others, rows, stand_ins), rows, baseline, times)
    for path in sorted(metrics_dir.glob("speed*.json")):  # speed.json sorts before speed_<name>.json
        if SPEED_FILE.fullmatch(path.stem) and (speed := json.loads(path.read_text())):
            lines += speed_table(speed, path.name)
    out = output_dir / f"{dataset}.md"
    out.write_text("\n".join(lines))
    msg.good(f"Wrote {out}")
