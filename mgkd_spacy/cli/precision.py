"""``mgkd precision``: a copy of a student pipeline that tags in another precision (bfloat16 or int8 on CPU)."""
from pathlib import Path

import torch
import typer
from wasabi import msg

from ..architectures import INFERENCE_DTYPES
from ..precision import load_with_inference_dtype


def precision_cli(
    model: Path = typer.Argument(..., exists=True, file_okay=False, help="Student pipeline directory"),
    output: Path = typer.Argument(..., help="Directory to write the copy to"),
    inference_dtype: str = typer.Option(..., "--inference-dtype", help=f"One of {', '.join(sorted(INFERENCE_DTYPES))}"),
) -> None:
    """Write ``model`` to ``output`` with its BiLSTM set to tag in ``--inference-dtype`` (weights unchanged).

    Same as loading it with ``spacy.load(model, config={"<encoder block>.inference_dtype": ...})``.
    """
    try:
        nlp = load_with_inference_dtype(model, inference_dtype)
    except (ValueError, RuntimeError) as err:  # unknown precision, no encoder, or no int8 support in this torch
        msg.fail(str(err), exits=1)
    output.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(output)
    msg.good(f"Wrote {output} (BiLSTM tagging in {inference_dtype})")
    if inference_dtype == "bfloat16" and not native_bfloat16():
        msg.warn("This CPU has no native bfloat16 (AVX512-BF16 or AMX), so the copy tags slower here than the float32 "
                 "pipeline (an AVX2-only EPYC: about 4x slower). It pays off on CPUs that have it; time both with "
                 "`mgkd speed` on the machine you deploy to.")


def native_bfloat16() -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (oneDNN's check for AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
