"""int8 tagging for the student's BiLSTM: a dynamically quantized copy of its float32 ``torch.nn.LSTM``.

Weights are quantized to int8 per output row (per channel) once; activations are quantized per batch as the LSTM
runs (torch's dynamic quantization, fbgemm/x86 kernels on x86 CPUs). Training and the saved weights stay float32.
"""
import warnings
from typing import List, Optional

import torch
from torch.nn.utils.rnn import PackedSequence

# What torch.ao.quantization prints on every use since torch marked it deprecated (it still ships in torch 2.13).
_DEPRECATION_MESSAGES = r"(?s)(torch\.ao\.quantization is deprecated|torch\.quantize_per_tensor, torch\.quantize_per_channel).*"


def check_int8_available() -> None:
    """Raise RuntimeError naming the fix when this torch build cannot run dynamically quantized LSTMs."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DEPRECATION_MESSAGES)
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            f"inference_dtype = \"int8\" needs torch's dynamic quantization (torch.ao.quantization.quantize_dynamic), "
            f"which this torch {torch.__version__} lacks ({err}). Tag in \"float32\" instead, or install the torch "
            "version requirements.txt pins."
        ) from None
    if torch.backends.quantized.engine == "none":
        raise RuntimeError(
            f"inference_dtype = \"int8\" needs a quantized engine, and this torch {torch.__version__} build has none "
            f"(torch.backends.quantized.supported_engines = {torch.backends.quantized.supported_engines}). "
            "Tag in \"float32\" instead."
        )


def quantize_lstm(lstm: torch.nn.LSTM) -> torch.nn.Module:
    """An int8 copy of ``lstm`` (weights quantized per output row; ``lstm`` itself is left unchanged), in eval mode."""
    check_int8_available()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION_MESSAGES)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        wrapper = quantize_dynamic(torch.nn.Sequential(lstm), {torch.nn.LSTM: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    return wrapper[0].eval()


class Int8LSTM:
    """Runs a float32 ``torch.nn.LSTM`` as its int8 copy, made on first use and again whenever the LSTM's weights
    differ from those the copy was made from (after training steps, or after loading other weights).

    A plain object, not a ``torch.nn.Module``, so the copy never enters the owning module's state dict.
    """

    def __init__(self) -> None:
        self._weights: List[torch.Tensor] = []
        self._quantized: Optional[torch.nn.Module] = None

    def __call__(self, lstm: torch.nn.LSTM, packed: PackedSequence) -> torch.Tensor:
        """The (N, 2 * hidden) float32 output rows of ``lstm`` for ``packed``, computed in int8. CPU only."""
        if packed.data.device.type != "cpu":
            raise ValueError(
                f"inference_dtype = \"int8\" tags on the CPU only, but the BiLSTM runs on {packed.data.device}. "
                "On a GPU set inference_dtype to \"float32\" or \"bfloat16\" (e.g. mgkd precision <pipeline> <copy> "
                "--inference-dtype float32)."
            )
        weights = [p.detach() for p in lstm.parameters()]
        if self._quantized is None or not all(torch.equal(a, b) for a, b in zip(weights, self._weights)):
            self._quantized = quantize_lstm(lstm)
            self._weights = [w.clone() for w in weights]
        with torch.no_grad():
            return self._quantized(packed)[0].data
