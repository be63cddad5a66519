"""Released checkpoints: backbone files in the layouts of the paper's ImageNet scripts, read weights-only and
evaluated on an image folder made here."""

import hashlib
import json

import pytest
import torch

from essl.cli import main
from essl.errors import EsslError
from essl.evaluation.evaluate import evaluate_protocol
from essl.evaluation.loading import load_backbone_file, load_target
from essl.evaluation.report import write_report
from essl.models import resnet18, resnet50


def torchvision_state(model):
    """State dict as torchvision names it, plus the fc layer a torchvision ResNet-50 would carry."""
    state = dict(model.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, model.feature_dim), torch.zeros(1000)
    return state


@pytest.fixture(scope="module")
def released_resnet50(tmp_path_factory):
    """A fake released E-SimCLR / E-BT file: random ResNet-50 weights in a {'backbone': ...} dict."""
    torch.manual_seed(0)
    model = resnet50()
    for m in model.modules():  # random BN statistics too, so that a wrong mapping would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("released") / "simclr-rot-0.4-100ep-resnet50.pth"
    state = {k: v for k, v in torchvision_state(model).items() if not k.startswith("fc.")}
    torch.save({"backbone": state}, path)
    return path, state


def test_released_backbone_loads_exactly(released_resnet50):
    path, state = released_resnet50
    backbone, info = load_backbone_file(path)
    assert info == {"layout": "official-resnet50", "arch": "resnet50"} and not backbone.training
    loaded = backbone.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def test_released_backbone_cli_knn_probe_diagnose_report(released_resnet50, tiny_folder, capsys):
    path, _ = released_resnet50
    common = [
        "--backbone-file",
        str(path),
        "--dataset",
        "folder",
        "--data-root",
        str(tiny_folder),
        "--image-size",
        "32",
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    assert main(["knn", *common, "--k", "5"]) == 0
    assert main(["diagnose", *common, "--group", "hflip", "--max-train", "12"]) == 0
    out_dir = path.with_name(f"{path.stem}-eval")
    knn = json.loads((out_dir / "eval" / "knn-k5-t0.1.json").read_text())
    assert knn["source"]["kind"] == "released" and knn["source"]["layout"] == "official-resnet50"
    assert knn["checkpoint_info"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert knn["protocol"]["overrides"]["k"] == {"protocol": 200, "used": 5, "why": "user override"}
    assert 0 <= knn["top1"] <= 100 and knn["data"]["image_size"] == 32
    # a tiny ImageNet-protocol probe (1 epoch) on the same target
    target = load_target(backbone_file=path, dataset="folder", data_root=str(tiny_folder), image_size=32)
    r = evaluate_protocol(target, "imagenet_simclr", epochs=1, device="cpu", precision="fp32")
    saved = json.loads((out_dir / "eval" / "probe-imagenet_simclr-epochs1.json").read_text())
    assert saved["protocol"]["lr"] == 1.0 and saved["protocol"]["schedule"] == "constant"
    assert saved["protocol"]["adapted"]["test_resize"]["used"] == round(32 * 256 / 224)
    assert saved["top1"] == r["top1"]
    rep = write_report([out_dir])
    text = (out_dir / "report" / "report.md").read_text()
    assert "released resnet50 (simclr-rot-0.4-100ep-resnet50.pth)" in text
    assert "linear probe top-1 · imagenet_simclr · epochs 1 (protocol 100)" in text
    assert {p.name for p in rep["files"]} == {"report.md", "report.json", "accuracy.png", "diagnostics-hflip.png"}


def test_simsiam_layout_and_bare_state_dict(tmp_path):
    torch.manual_seed(1)
    model = resnet18()
    state = torchvision_state(model)
    wrapped = {
        "state_dict": {
            **{f"module.backbone.{k}": v for k, v in state.items()},
            "module.projector.0.weight": torch.zeros(3, 3),
        },
        "epoch": 100,
    }
    torch.save(wrapped, tmp_path / "simsiam.pth")
    torch.save(state, tmp_path / "bare.pth")
    for name, layout in (("simsiam.pth", "official-simsiam"), ("bare.pth", "bare")):
        backbone, info = load_backbone_file(tmp_path / name, "resnet18")
        assert info["layout"] == layout
        assert torch.equal(backbone.layer4[1].bn2.running_var, model.layer4[1].bn2.running_var)


class NotAWeight:
    pass


def test_bad_files_are_refused_with_clear_errors(tmp_path, tiny_runs):
    torch.save({"backbone": {"conv1.weight": torch.zeros(64, 3, 7, 7)}, "extra": NotAWeight()}, tmp_path / "evil.pth")
    with pytest.raises(EsslError, match="weights-only"):
        load_backbone_file(tmp_path / "evil.pth")
    torch.save({"backbone": dict(resnet18().state_dict())}, tmp_path / "r18.pth")
    with pytest.raises(EsslError, match="does not fit a resnet50"):
        load_backbone_file(tmp_path / "r18.pth", "resnet50")
    with pytest.raises(EsslError, match="needs --dataset"):
        load_target(backbone_file=tmp_path / "r18.pth")
    with pytest.raises(EsslError, match="not both"):
        load_target(tiny_runs[0], backbone_file=tmp_path / "r18.pth")
    with pytest.raises(EsslError, match="essl run checkpoint"):
        load_backbone_file(tiny_runs[0] / "checkpoint.pt")
    with pytest.raises(EsslError, match="released backbone file"):
        load_target(tmp_path / "r18.pth")
