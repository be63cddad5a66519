"""Bring your own backbone: backbone=package.module:factory."""

import pytest
import torch
from torch import nn

from essl.errors import EsslError
from essl.models import make_backbone
from essl.training.config import load_config
from essl.training.model import ESSLModel


class Features(nn.Module):
    def __init__(self, in_channels=3, feature_dim=24):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, feature_dim, 3)
        self.feature_dim = feature_dim

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def with_channels(in_channels: int = 3) -> nn.Module:
    return Features(in_channels)


def without_channels() -> nn.Module:
    return Features(2, feature_dim=8)


def not_a_module():
    return "model"


def no_feature_dim():
    return nn.Linear(2, 2)


NOT_CALLABLE = 3


def test_factory_gets_in_channels_when_it_takes_them():
    model = make_backbone("tests.test_custom_backbone:with_channels", in_channels=1)
    assert model.conv.in_channels == 1 and model.feature_dim == 24
    assert make_backbone("tests.test_custom_backbone:without_channels", in_channels=1).conv.in_channels == 2
    assert type(make_backbone("tests.test_custom_backbone:Features", 5)).__name__ == "Features"  # a class too


def test_factory_backbone_in_the_essl_model():
    cfg = load_config("mnist5k-esimclr", ["backbone=tests.test_custom_backbone:with_channels"])
    model = ESSLModel(cfg, 1)
    x = torch.randn(4, 1, 12, 12)
    out = model(x, x, [(torch.randn(8, 1, 12, 12), torch.arange(8) % 4)])
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize(
    "spec,match",
    [
        ("no_such_module_xyz:f", "cannot import no_such_module_xyz"),
        ("tests.test_custom_backbone:missing", "has no attribute 'missing'"),
        ("tests.test_custom_backbone:NOT_CALLABLE", "not callable"),
        ("tests.test_custom_backbone:not_a_module", "not a torch.nn.Module"),
        ("tests.test_custom_backbone:no_feature_dim", "feature_dim"),
        (":f", "package.module:function"),
        ("resnet19", "Unknown backbone"),
    ],
)
def test_bad_factories(spec, match):
    with pytest.raises(EsslError, match=match):
        make_backbone(spec, 1)


def test_module_in_the_current_folder_is_found(tmp_path, monkeypatch):
    (tmp_path / "my_local_nets.py").write_text(
        "from torch import nn\n"
        "def net(in_channels=3):\n"
        "    m = nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())\n"
        "    m.feature_dim = 4\n"
        "    return m\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert make_backbone("my_local_nets:net", 1).feature_dim == 4
