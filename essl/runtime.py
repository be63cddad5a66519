"""Where and how tensors are computed: device, autocast precision and memory format, resolved from settings.

Used alike by pretraining (:mod:`essl.training.pretrain`), evaluation (:mod:`essl.evaluation.evaluate`) and the
photonics fine-tuning (:mod:`essl.evaluation.photonics`), so that ``auto`` means the same everywhere.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

import torch
from torch import nn

from essl.catalog import PRECISIONS
from essl.errors import EsslError

ModuleT = TypeVar("ModuleT", bound=nn.Module)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; ``cuda`` without CUDA is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise EsslError("device=cuda was asked for but CUDA is not available; use device=cpu or device=auto.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 where the hardware runs it fast (CUDA with bf16, CPUs with AVX512-BF16/AMX), fp16 on older
    CUDA GPUs, fp32 otherwise."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
    if name == "fp16" and device.type != "cuda":
        raise EsslError("precision=fp16 needs a CUDA device; on a CPU use bf16 or fp32.")
    return DTYPES[name]


def precision_name(dtype: torch.dtype) -> str:
    """``bf16`` / ``fp16`` / ``fp32`` of an autocast dtype."""
    return {v: k for k, v in DTYPES.items()}[dtype]


def resolve_runtime(device: str, precision: str) -> tuple[torch.device, torch.dtype, str]:
    """``(device, autocast dtype, precision name)`` of a device and a precision setting."""
    if precision not in PRECISIONS:
        raise EsslError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    return dev, dtype, precision_name(dtype)


def resolve_channels_last(value: str) -> bool:
    """auto: on (channels_last helps convolutions with oneDNN on CPUs and with cuDNN on GPUs)."""
    return str(value).lower() in ("true", "auto")


def to_channels_last(module: ModuleT) -> ModuleT:
    """``module.to(memory_format=torch.channels_last)``: its 4-D parameters and buffers in NHWC order (the
    ``channels_last`` setting). torch's type stubs do not list ``memory_format`` for ``Module.to``, which takes it."""
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op for fp32."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)
