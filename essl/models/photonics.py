"""The photonics encoder and the shared-BatchNorm heads of the E-SSL photonics experiment.

Architecture of the official code (rdangovs/essl ``photonics/phc_models.py``):

- :class:`PhotonicsEncoder` (``phc_cnn``): three blocks Conv(k=7) → BN → ReLU → MaxPool on the 1-channel
  32×32 unit cell, widths 64, 256, 256 and pools 2, 4, 4, then FC 256→1024 → ReLU → FC 1024→1024: a 1024-d
  representation.

  **Padding.** Every convolution uses padding 3 (``ceil((7 - 1) / 2)`` in the official code), i.e. "same"
  padding, so the spatial size goes 32 → (conv) 32 → (pool 2) 16 → (conv) 16 → (pool 4) 4 → (conv) 4 →
  (pool 4) 1, the 256×1×1 the reference states. Unpadded 7×7 convolutions after the first would shrink 16 → 10
  → (pool 4) 2, and the third convolution could not run on a 2×2 map, so padding 3 on all three is the only
  reading consistent with a 1×1 output. The encoder therefore requires 32×32 inputs (other sizes are refused
  with an :class:`~essl.errors.EsslError`, since the flatten expects 256 features).

- :func:`shared_norm_mlp`: Linear(d→h) → BN(h) → ReLU → Linear(h→h) → **the same BN instance** → ReLU →
  Linear(h→out). This reproduces a quirk of the official ``Projector``/``Classifier`` (``phc_models.py``):
  the list ``[BatchNorm1d(h)]`` is built once and appended to both hidden layers, so both layers share one
  BatchNorm's affine parameters *and* running statistics (the running mean/variance are updated twice per
  forward pass, once with each layer's batch statistics). Linear layers have biases, as in the original.
  Used with ``h = 512`` for the projector (``out = 256``) and the E-SSL prediction head (``out = 4``).
"""

from __future__ import annotations

import torch
from torch import nn

from essl.errors import EsslError

#: Input side of the unit-cell images the encoder is built for.
CELL_SIZE = 32


class PhotonicsEncoder(nn.Module):
    """Conv encoder of the photonics experiment (module docstring); output ``(N, 1024)``."""

    def __init__(
        self,
        in_channels: int = 1,
        widths: tuple[int, int, int] = (64, 256, 256),
        hidden: int = 1024,
        out_dim: int = 1024,
        kernel: int = 7,
    ):
        super().__init__()
        pad = (kernel - 1) // 2 + (kernel - 1) % 2  # ceil((k-1)/2), as in the official code: 3 for k = 7
        layers: list[nn.Module] = []
        cin = in_channels
        for width, pool in zip(widths, (2, 4, 4)):
            layers += [
                nn.Conv2d(cin, width, kernel, stride=1, padding=pad),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(pool, pool),
            ]
            cin = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(widths[-1], hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
        self.feature_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (CELL_SIZE, CELL_SIZE):
            raise EsslError(
                f"The photonics encoder (phc_cnn) takes {CELL_SIZE}×{CELL_SIZE} unit cells (its three "
                f"poolings reduce 32 px to 1); got {tuple(x.shape[-2:])}. Use view 'none' (no crop)."
            )
        return self.fc(torch.flatten(self.features(x), 1))


def phc_cnn_small(in_channels: int = 1) -> PhotonicsEncoder:
    """``phc_cnn_small``: the same encoder at a quarter of the convolution widths (16, 64, 64), still 1024-d.

    Not in the paper: a CPU-sized stand-in (about 16× fewer convolution FLOPs) for runs that must fit minutes
    on a few cores, such as ``essl phc experiment --budget small``. Results obtained with it are labelled so.
    """
    return PhotonicsEncoder(in_channels, widths=(16, 64, 64))


def shared_norm_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear → BN → ReLU → Linear → (same BN) → ReLU → Linear, the official photonics head (docstring)."""
    norm = nn.BatchNorm1d(hidden)
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        norm,
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        norm,
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim),
    )


def dos_head(in_dim: int = 1024, widths: tuple[int, ...] = (1024, 1024, 512), out_dim: int = 400) -> nn.Sequential:
    """The fine-tuning regressor (official ``PredictorDOS``): Linear layers ``in → 1024 → 1024 → 512 → 400`` with a
    ReLU after each hidden layer, no normalisation; it predicts ``y − EL`` (``photonics/main.py``)."""
    dims = (in_dim, *widths)
    layers: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


#: Key prefixes of the official photonics encoder (rdangovs/essl ``photonics/phc_models.py``: ``Enc.enc`` is an
#: ``Encoder`` with ``enc_block2d`` and ``fcpart``) and of :class:`PhotonicsEncoder`; the layer indices agree.
OFFICIAL_PREFIXES = {"enc.enc_block2d.": "features.", "enc.fcpart.": "fc."}


def official_encoder_state(state: dict) -> dict | None:
    """The official photonics encoder's weights renamed to :class:`PhotonicsEncoder` keys, or None if ``state`` has
    none (``enc.enc_block2d.*``, ``enc.fcpart.*``).

    Accepts the inner dict of a pretraining file (``{'model_state_dict': Encmodel.encoder.state_dict(),
    'ptepoch': E}``, as ``pretrain_model`` saves ``EP100``/``EP200``), the state of the fine-tuning ``Net``
    (``enc.*`` and ``predictor.*``; the DOS head is ignored) and of a whole ``SimCLR``/``SimCLRwEE`` model
    (``encoder.enc.*``), with or without a DataParallel ``module.`` prefix.
    """
    out = {}
    for key, value in state.items():
        for strip in ("module.", "encoder."):
            key = key.removeprefix(strip)
        for official, ours in OFFICIAL_PREFIXES.items():
            if key.startswith(official):
                out[ours + key[len(official) :]] = value
    return out or None


def encoder_for_state(state: dict) -> PhotonicsEncoder:
    """A :class:`PhotonicsEncoder` whose widths fit ``state`` (``features.*``/``fc.*`` keys): the paper's
    ``phc_cnn`` (64, 256, 256), ``phc_cnn_small`` or any other widths."""
    try:
        convs = [state[f"features.{i}.weight"] for i in (0, 4, 8)]
        fc1, fc2 = state["fc.0.weight"], state["fc.2.weight"]
    except KeyError as exc:
        raise EsslError(
            f"The photonics encoder weights lack {exc.args[0]!r} (expected the three convolutions "
            f"features.0/4/8 and the layers fc.0/fc.2)."
        ) from None
    widths = (int(convs[0].shape[0]), int(convs[1].shape[0]), int(convs[2].shape[0]))
    return PhotonicsEncoder(
        int(convs[0].shape[1]), widths, int(fc1.shape[0]), int(fc2.shape[0]), int(convs[0].shape[-1])
    )
