"""Tagging precision of a pipeline's BiLSTM students: find, read and set the inference_dtype of its
``mgkd.BiLSTMEncoder.v2`` / ``.v3`` blocks."""
from pathlib import Path
from typing import Dict, List, Union

import spacy
from spacy.language import Language
from thinc.api import Config

from .architectures import inference_torch_dtype

ENCODERS = ("mgkd.BiLSTMEncoder.v2", "mgkd.BiLSTMEncoder.v3")


def encoder_sections(config: Union[Config, Dict]) -> Dict[str, Dict]:
    """{dotted path: block} of every BiLSTM encoder block (``ENCODERS``) under the config's components."""
    found = {}

    def walk(node: Dict, path: List[str]) -> None:
        if node.get("@architectures") in ENCODERS:
            found[".".join(path)] = node
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, path + [key])

    walk(config.get("components", {}), ["components"])
    return found


def inference_dtypes(nlp: Language) -> List[str]:
    """The inference_dtype of each BiLSTM encoder in the pipeline (empty when it has none)."""
    return [block.get("inference_dtype", "float32") for block in encoder_sections(nlp.config).values()]


def load_with_inference_dtype(path: Path, inference_dtype: str) -> Language:
    """Load the pipeline at ``path`` with every BiLSTM encoder set to tag in ``inference_dtype``.

    Raises ValueError for an unknown precision, or a pipeline without a v2 or v3 BiLSTM encoder (a teacher, spaCy's
    own ner, or a student trained with the v1 encoder), whose precision this cannot set; RuntimeError for int8 on a
    torch build without a quantized engine.
    """
    inference_torch_dtype(inference_dtype)  # raises for an unknown name before anything is loaded
    sections = encoder_sections(spacy.util.load_config(Path(path) / "config.cfg", interpolate=False))
    if not sections:
        raise ValueError(
            f"{path} has no {' or '.join(ENCODERS)} block in its config, so there is no BiLSTM whose tagging precision could be set; "
            "only students built with that encoder (configs/student_*.cfg) have one."
        )
    return spacy.load(path, config={f"{section}.inference_dtype": inference_dtype for section in sections})
