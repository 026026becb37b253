"""Which torch device a command runs on, from the user's ``auto`` / ``cpu`` / ``cuda[:N]``.

Why one module: training, prediction, the challenge command and feature extraction all
take a device name from a config key or an option, and each must refuse the same bad
names with the same message (naming that key or option) and fall back the same way.
It sits below ``features`` and ``train`` so both can use it.
"""

from __future__ import annotations

import warnings

import torch

from modalsurv.errors import ConfigError


def resolve_device(name: str, fallback: bool = False, what: str = "train.device") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; anything else is passed to torch.

    A device torch does not know, or CUDA where there is none, is a ConfigError naming
    ``train.device``; with ``fallback`` (prediction: a model trained on a GPU scoring on
    a laptop) CUDA falls back to the CPU with a warning instead."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"{what} {name!r} is not a device: {err}") from None
    if device.type not in ("cpu", "cuda"):  # e.g. 'mps', 'xpu': not what this code runs on
        raise ConfigError(f"{what} {name!r}: modalsurv runs on 'cpu' or 'cuda[:N]' ('auto'"
                          " picks)")  # fmt: skip
    if device.type == "cuda" and not torch.cuda.is_available():
        if fallback:
            warnings.warn(f"{what} {name!r}: no CUDA device here; predicting on the CPU",
                          stacklevel=2)  # fmt: skip
            return torch.device("cpu")
        raise ConfigError(f"{what} {name!r}: no CUDA device is available here; use"
                          " 'auto' or 'cpu'")  # fmt: skip
    return device
