"""Run one project.yml training command with another seed (and step count), then score it on the test split.

Usage: python scripts/run_seed.py train-te_seq 2
runs the single script line of the command `train-te_seq` with `--system.seed 2` and the output
`training/conll2003/te_seq_seed2` (the `train-<row>_seed<N>` commands of project.yml are made the same way), then
`mgkd evaluate training/conll2003/te_seq_seed2/model-best corpus/conll2003/test.spacy --output
metrics/conll2003/te_seq_seed2.json`. The dataset is read from the command's `--output training/<dataset>/<row>`.
`--steps 6000` also replaces the command's `--training.max_steps` and puts `_steps6000` before `_seed<N>` in the
output. `--dry-run` prints the two commands instead. For rows whose extra seeds project.yml does not list.
"""
import re
import shlex
import subprocess
from pathlib import Path
from typing import Dict, Optional, Tuple

import srsly
import typer
from weasel.util.config import substitute_project_variables

SEED = "--system.seed ${vars.seed}"
OUTPUT = re.compile(r"--output (training/([^/\s]+)/([^/\s]+)) ")
STEPS = re.compile(r"--training\.max_steps \S+")


def seed_command(commands: Dict[str, dict], name: str, seed: int, steps: Optional[int] = None) -> Tuple[str, str]:
    """The command ``name`` with ``seed`` and the output ``<output>_seed<seed>``, and that output directory;
    with ``steps``, ``--training.max_steps <steps>`` and the output ``<output>_steps<steps>_seed<seed>``."""
    if name not in commands:
        raise ValueError(f"project.yml has no command '{name}'; pass one of its train-<row> commands, e.g. train-te_seq.")
    script = commands[name]["script"]
    match = OUTPUT.search(script[0]) if len(script) == 1 else None
    if match is None or script[0].count(SEED) != 1:
        raise ValueError(f"'{name}' is not one `spacy train` line with `--output training/<dataset>/<row>` and "
                         f"`{SEED}`, so it cannot be rerun with another seed this way.")
    output = match.group(1) + (f"_steps{steps}" if steps is not None else "") + f"_seed{seed}"
    line = script[0].replace(match.group(0), f"--output {output} ").replace(SEED, f"--system.seed {seed}")
    if steps is not None:
        line, n_replaced = STEPS.subn(f"--training.max_steps {steps}", line)
        if n_replaced != 1:
            raise ValueError(f"'{name}' does not set `--training.max_steps` exactly once, so --steps cannot replace it.")
    return line, output


def main(
    name: str = typer.Argument(..., help="A project.yml training command, e.g. train-te_seq"),
    seed: int = typer.Argument(..., help="The seed (0 is the main run's)", min=0),
    project: Path = typer.Option(Path("project.yml"), help="The project file", exists=True, dir_okay=False),
    steps: Optional[int] = typer.Option(None, help="Train this many steps instead of the command's max_steps", min=1),
    gpu_id: int = typer.Option(-1, help="GPU for the evaluation (-1: CPU)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the commands, run nothing"),
):
    config = srsly.read_yaml(project)
    commands = {command["name"]: command for command in config["commands"]}
    try:
        line, output = seed_command(commands, name, seed, steps)
        # ${vars.*} resolved as `spacy project run` (weasel) resolves them; an unknown one is a ValueError too
        train = substitute_project_variables({"vars": config.get("vars", {}), "line": line})["line"]
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="NAME")
    dataset, row = output.split("/")[1:]
    evaluate = shlex.join(["mgkd", "evaluate", f"{output}/model-best", f"corpus/{dataset}/test.spacy",
                           "--output", f"metrics/{dataset}/{row}.json", "--gpu-id", str(gpu_id)])
    for command in (train, evaluate):
        print(command, flush=True)
        if not dry_run:
            subprocess.run(command, shell=True, check=True)


if __name__ == "__main__":
    typer.run(main)
