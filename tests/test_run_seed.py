"""scripts/run_seed.py: a project.yml training command rerun with another seed, made as the project.yml commands <row>_seed<N> are."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "run_seed.py"
PROJECT = yaml.safe_load((ROOT / "project.yml").read_text())
COMMANDS = {command["name"]: command for command in PROJECT["commands"]}
_spec = importlib.util.spec_from_file_location("run_seed", SCRIPT)
run_seed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_seed)


def _seed_lines():
    """(base command, seed, line) for every seed line of project.yml whose seed-0 run is a one-line command."""
    base_of = {}
    for command in PROJECT["commands"]:
        if len(command["script"]) == 1 and (match := run_seed.OUTPUT.search(command["script"][0])):
            base_of[match.group(1)] = command["name"]
    for command in PROJECT["commands"]:
        for line in command["script"]:
            match = re.search(r"--output (training/\S+)_seed(\d+) ", line)
            if match and match.group(1) in base_of and line.startswith("python -m spacy train"):
                yield base_of[match.group(1)], int(match.group(2)), line


def test_it_makes_every_seed_line_of_project_yml():
    lines = list(_seed_lines())
    assert len(lines) >= 30
    assert {name for name, _, _ in lines} >= {"train-vanilla", "train-te_seq", "mpnet-train-te_seq", "wnut17-train-te_seq"}
    for name, seed, line in lines:
        assert run_seed.seed_command(COMMANDS, name, seed) == (line, run_seed.OUTPUT.search(line).group(1)), (name, seed)


def test_dry_run_prints_the_training_and_the_evaluation_that_evaluate_seeds_runs():
    result = subprocess.run([sys.executable, str(SCRIPT), "train-te_seq", "2", "--dry-run"], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    train, evaluate = result.stdout.splitlines()
    assert "--output training/conll2003/te_seq_seed2 " in train and "--system.seed 2 " in train
    assert "${" not in train and f"--training.max_steps {PROJECT['vars']['student_steps']} " in train
    assert evaluate in [line.replace("${vars.gpu_id}", "-1") for line in COMMANDS["evaluate-seeds"]["script"]]


def test_each_seed_command_is_its_row_made_as_run_seed_makes_it():
    """<name>_seed<N> is what ``seed_command`` makes of <name> (seed 0) for seed N: the same line with only the seed
    and the output changed, the same deps, and in each workflow that runs it, after the seed-0 run."""
    seeds = [(name, name.rsplit("_seed", 1)) for name in COMMANDS if re.fullmatch(r".+_seed\d", name)]
    assert len(seeds) >= 34
    for name, (base, seed) in seeds:
        line, output = run_seed.seed_command(COMMANDS, base, int(seed))
        assert COMMANDS[name]["script"] == [line], name
        assert COMMANDS[name]["deps"] == COMMANDS[base]["deps"], name
        assert COMMANDS[name]["outputs"] == [f"{output}/model-best"], name
        workflows = [steps for steps in PROJECT["workflows"].values() if name in steps]
        assert workflows and all(steps.index(base) < steps.index(name) for steps in workflows), name


@pytest.mark.parametrize("name,message", [
    ("train-nonexistent", "has no command 'train-nonexistent'"),
    ("annotate", "is not one `spacy train` line"),
    ("report", "is not one `spacy train` line"),
])
def test_commands_it_cannot_rerun_get_a_clear_error(name, message):
    result = subprocess.run([sys.executable, str(SCRIPT), name, "1", "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    words = " ".join(re.sub("[\u2500-\u257f]", " ", result.stderr).split())  # typer boxes and wraps the error
    assert result.returncode != 0 and message in words
    assert "Traceback" not in result.stderr


def test_steps_makes_the_step_scaled_row_of_project_yml():
    """--steps on `train-da30000` gives `train-da30000_steps` (vars.da30k_steps steps), output aside."""
    steps = PROJECT["vars"]["da30k_steps"]
    line, output = run_seed.seed_command(COMMANDS, "train-da30000", 1, steps)
    expected, _ = run_seed.seed_command(COMMANDS, "train-da30000_steps", 1)
    assert output == f"training/conll2003/da30000_steps{steps}_seed1"
    assert line == expected.replace("${vars.da30k_steps}", str(steps)).replace("da30000_steps_seed1 ", f"da30000_steps{steps}_seed1 ")


def test_steps_dry_run_trains_and_scores_the_named_output():
    result = subprocess.run([sys.executable, str(SCRIPT), "train-te_da_seq", "0", "--steps", "6000", "--dry-run"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    train, evaluate = result.stdout.splitlines()
    assert "--output training/conll2003/te_da_seq_steps6000_seed0 " in train and train.count("--training.max_steps 6000 ") == 1
    assert evaluate.endswith("--output metrics/conll2003/te_da_seq_steps6000_seed0.json --gpu-id -1")


def test_steps_needs_exactly_one_max_steps():
    script = "python -m spacy train c.cfg --output training/d/r --system.seed ${vars.seed} --training.max_steps 5 --training.max_steps 6"
    with pytest.raises(ValueError, match="does not set `--training.max_steps` exactly once"):
        run_seed.seed_command({"train-r": {"script": [script]}}, "train-r", 1, 100)
