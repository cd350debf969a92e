"""``mgkd report``: paper-style tables (P/R/F1, gain over vanilla) and plots from the metrics of a dataset."""
import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional

import typer
from wasabi import msg


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_rows(metrics_dir: Path) -> Dict[str, dict]:
    """{row name: scores} from ``metrics_dir/<row>.json`` (spacy evaluate output)."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(metrics_dir.glob("*.json")) if path.stem != "speed"}


def table(rows: Dict[str, dict], baseline: Optional[str]) -> List[str]:
    lines = ["| model | P | R | F1 | gain over vanilla |", "|---|---|---|---|---|"]
    base = rows.get(baseline, {}).get("ents_f") if baseline else None
    for name, scores in rows.items():
        gain = f"{100 * (scores['ents_f'] - base):+.2f}" if base is not None and name != baseline else ""
        lines.append(f"| {name} | {100 * scores['ents_p']:.2f} | {100 * scores['ents_r']:.2f} | {100 * scores['ents_f']:.2f} | {gain} |")
    return lines


def plot(points: Dict[int, float], xlabel: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(points)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(xs, [100 * points[x] for x in xs], marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test F1")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def report_cli(
    dataset: str = typer.Argument(..., help="Dataset name (reports/<dataset>.md)"),
    metrics_dir: Path = typer.Argument(..., exists=True, help="Directory of <row>.json from spacy evaluate"),
    output_dir: Path = typer.Option(Path("reports"), help="Where to write the markdown and PNGs"),
    baseline: str = typer.Option("vanilla", help="Row the gains are computed against"),
    command: str = typer.Option("", help="The command/workflow that produced the metrics (recorded)"),
) -> None:
    """Write reports/<dataset>.md with P/R/F1 per row and plots of F1 vs K (rows k<K>) and vs unlabeled size (rows da<N>)."""
    rows = load_rows(metrics_dir)
    if not rows:
        msg.fail(f"No metrics in {metrics_dir}; run the evaluate steps first.", exits=1)
    output_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {dataset}: test results", "", f"Generated {datetime.now():%Y-%m-%d %H:%M} at commit {_commit()} "
             f"by `{command or 'mgkd report'}` from `{metrics_dir}`.", ""] + table(rows, baseline)
    speed = metrics_dir / "speed.json"
    if speed.exists():
        lines += ["", "| pipeline | words/s | trainable params | total params | disk MB |", "|---|---|---|---|---|"]
        for r in json.loads(speed.read_text()):
            lines.append(f"| {r['model']} | {r['words_per_second']:,.0f} | {r['trainable_params']:,} | {r['total_params']:,} | {r['disk_bytes'] / 1e6:.1f} |")
    for prefix, xlabel in (("k", "K (teacher sequences)"), ("da", "unlabeled sentences")):
        points = {int(n[len(prefix):]): s["ents_f"] for n, s in rows.items() if n.startswith(prefix) and n[len(prefix):].isdigit()}
        if points:
            png = output_dir / f"{dataset}_f1_vs_{prefix}.png"
            plot(points, xlabel, png)
            lines += ["", f"![F1 vs {xlabel}]({png.name})"]
    out = output_dir / f"{dataset}.md"
    out.write_text("\n".join(lines) + "\n")
    msg.good(f"Wrote {out}")
