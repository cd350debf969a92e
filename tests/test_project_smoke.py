"""The ``smoke`` workflow of project.yml runs end to end on a copy of the project (a few minutes)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MIRROR = ROOT.parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.skipif(not MIRROR.exists(), reason="data mirror ../shared/data not present")
def test_smoke_workflow(tmp_path):
    for name in ("project.yml", "configs", "scripts", "mgkd_spacy"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, tmp_path / name)
    env = {**os.environ, "MGKD_DATA_MIRROR": str(MIRROR), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([sys.executable, "-m", "spacy", "project", "run", "smoke", str(tmp_path)], check=True, env=env)
    for row in ("teacher", "vanilla", "te_seq", "te_da_seq", "te_da_seq_bf16", "te_da_seq_int8"):
        scores = json.loads((tmp_path / "metrics" / "smoke" / f"{row}.json").read_text())
        assert 0.0 <= scores["ents_f"] <= 1.0
        # trained rows carry their training's wall time; the bfloat16 and int8 copies were not trained
        copy = row.endswith(("_bf16", "_int8"))
        assert (scores["training_time"]["steps"] > 0) if not copy else ("training_time" not in scores)
    speed = json.loads((tmp_path / "metrics" / "smoke" / "speed.json").read_text())
    assert len(speed) == 5 and all(r["words_per_second"] > 0 for r in speed)
    assert [r["lstm_precision"] for r in speed] == [None, "float32", "float32", "bfloat16", "int8"]
    assert {r["crf_backend"] for r in speed} == {"kernel"}  # setup.py built the C CRF kernel
    report = (tmp_path / "reports" / "smoke.md").read_text()
    assert "## Table 1: main results" in report and "| Vanilla BiLSTM+CRF |" in report and "| +TE +DA +SEQ |" in report
    assert "| +TE +DA +SEQ, bfloat16 |" in report and "| +TE +DA +SEQ, int8 |" in report
    assert "| training time |" in report and "Training wall time: " in report


def test_fetch_offline_lists_missing_assets(tmp_path):
    shutil.copy(ROOT / "project.yml", tmp_path / "project.yml")
    env = {**os.environ, "MGKD_DATA_MIRROR": str(tmp_path / "nowhere"), "MGKD_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "mgkd_spacy.cli", "fetch", "--project-dir", str(tmp_path)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "asset(s) missing" in result.stdout and "assets/conll2003/train.conll" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
