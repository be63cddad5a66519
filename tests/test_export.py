"""essl export / essl.load_backbone / hubconf: round trips, torchvision key names, released layouts, bad inputs."""

import json
from pathlib import Path

import pytest
import torch

from essl import load_backbone
from essl.cli import main
from essl.data import load_mnist5k
from essl.errors import EsslError
from essl.evaluation.loading import file_digest, load_run_backbone
from essl.runs import write_result
from essl.export import export_backbone, infer_arch
from essl.models import make_backbone
from essl.training.config import load_config
from essl.training.pretrain import pretrain

ROOT = Path(__file__).resolve().parent.parent


def torchvision_resnet18_keys() -> set[str]:
    """torchvision.models.resnet18().state_dict() keys without fc.*, written out by hand (torchvision is not a
    dependency): stem, four stages of two BasicBlocks, a 1x1 downsample in the first block of stages 2-4."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", *(f"bn1.{s}" for s in bn)}
    for stage in range(1, 5):
        for block in range(2):
            p = f"layer{stage}.{block}"
            keys |= {
                f"{p}.conv1.weight",
                f"{p}.conv2.weight",
                *(f"{p}.bn1.{s}" for s in bn),
                *(f"{p}.bn2.{s}" for s in bn),
            }
            if stage > 1 and block == 0:
                keys |= {f"{p}.downsample.0.weight", *(f"{p}.downsample.1.{s}" for s in bn)}
    return keys


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A one-epoch ResNet-18 (CIFAR stem) run: two steps on 16 MNIST digits, 16-px views."""
    out = tmp_path_factory.mktemp("export") / "run"
    cfg = load_config(
        "mnist5k-simclr",
        [
            "backbone=resnet18_cifar",
            "epochs=1",
            "subset=16",
            "batch_size=8",
            "views=mnist@16,mnist@16",
            "knn_every=0",
            "precision=fp32",
            "num_threads=1",
        ],
    )
    return pretrain(cfg, out, progress=False)


def same_features(a: torch.nn.Module, b: torch.nn.Module, channels: int = 1) -> bool:
    x = torch.randn(3, channels, 28, 28)
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-5)


@pytest.mark.parametrize(
    "name,fmt", [("backbone.safetensors", "safetensors"), ("backbone.pt", "pt"), ("backbone", "safetensors")]
)
def test_export_round_trip(run, tmp_path, name, fmt):
    sha = file_digest(run / "checkpoint.pt")
    write_result(run, "knn", {"checkpoint_info": {"sha256": sha}, "top1": 12.5})
    write_result(run, "old", {"checkpoint_info": {"sha256": "0" * 64}, "top1": 1.0})
    weights, meta_file = export_backbone(run, tmp_path / name)
    assert weights.suffix == f".{fmt}" and meta_file == weights.with_suffix(".json")
    meta = json.loads(meta_file.read_text())
    assert meta["architecture"] == "resnet18_cifar" and meta["keys"] == "torchvision"
    assert (meta["in_channels"], meta["input_size"], meta["feature_dim"]) == (1, 16, 512)
    assert meta["data_image_size"] == 28
    data = load_mnist5k("train")
    assert meta["normalization"]["mean"] == pytest.approx(list(data.mean))
    assert meta["checkpoint"]["sha256"] == sha and meta["checkpoint"]["epoch"] == 1
    assert list(meta["evaluations"]) == ["knn"]  # only results of this very checkpoint
    assert meta["config"]["backbone"] == "resnet18_cifar" and meta["essl_version"]
    assert meta["weights"]["sha256"] == file_digest(weights) and meta["weights"]["format"] == fmt

    if fmt == "safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(weights, weights_only=True)
    assert set(state) == torchvision_resnet18_keys()

    loaded, loaded_meta = load_backbone(weights)
    original = load_run_backbone(run)[0]
    assert not loaded.training and loaded_meta["source"] == "export"
    assert same_features(loaded, original)


def test_export_is_smaller_than_the_training_checkpoint(run, tmp_path):
    weights, _ = export_backbone(run, tmp_path / "b.safetensors")
    assert weights.stat().st_size < 0.6 * (run / "checkpoint.pt").stat().st_size


def test_load_backbone_from_run_folder_and_checkpoint_file(run):
    for path in (run, run / "checkpoint.pt"):
        model, meta = load_backbone(path)
        assert meta["source"] == "run" and meta["in_channels"] == 1 and not model.training
        assert same_features(model, load_run_backbone(run)[0])


def test_torch_hub_local(run, tmp_path):
    weights, _ = export_backbone(run, tmp_path / "hub.safetensors")
    model = torch.hub.load(str(ROOT), "backbone", path=str(weights), source="local", trust_repo=True)
    assert model.essl_metadata["feature_dim"] == 512
    assert same_features(model, load_run_backbone(run)[0])


@pytest.mark.parametrize("layout", ["backbone", "state_dict", "bare"])
def test_load_released_layouts_infers_the_architecture(tmp_path, layout):
    net = make_backbone("resnet18", 3).eval()
    state = net.state_dict()
    ckpt = {
        "backbone": {"backbone": state},
        "state_dict": {"state_dict": {f"module.backbone.{k}": v for k, v in state.items()}, "epoch": 3},
        "bare": {**state, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)},
    }[layout]
    torch.save(ckpt, tmp_path / "released.pth")
    model, meta = load_backbone(tmp_path / "released.pth")
    assert meta["source"] == "released" and meta["architecture"] == "resnet18"
    assert same_features(model, net, channels=3)


def test_infer_arch():
    assert infer_arch(make_backbone("resnet50").state_dict()) == "resnet50"
    assert infer_arch(make_backbone("resnet18_cifar").state_dict()) == "resnet18_cifar"
    with pytest.raises(EsslError, match="conv1.weight"):
        infer_arch({"x": torch.zeros(1)})


def test_export_refuses_to_overwrite(run, tmp_path):
    weights, meta_file = export_backbone(run, tmp_path / "b.safetensors")
    before = weights.read_bytes()
    with pytest.raises(EsslError, match="already exists"):
        export_backbone(run, weights)
    assert weights.read_bytes() == before
    export_backbone(run, weights, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.safetensors"]  # no temporary files left


@pytest.mark.parametrize(
    "out,fmt,match",
    [
        ("missing/b.safetensors", None, "does not exist"),
        ("b.safetensors", "pt", "--format"),
        ("b.json", None, "OUT.safetensors or OUT.pt"),
    ],
)
def test_export_bad_outputs(run, tmp_path, out, fmt, match):
    with pytest.raises(EsslError, match=match):
        export_backbone(run, tmp_path / out, fmt=fmt)
    assert not (tmp_path / "b.json").exists()


def test_export_of_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EsslError):
        export_backbone(tmp_path / "empty", tmp_path / "b.safetensors")
    assert not (tmp_path / "b.safetensors").exists()


def test_load_backbone_bad_inputs(run, tmp_path):
    with pytest.raises(EsslError, match="does not exist"):
        load_backbone(tmp_path / "nothing.safetensors")
    weights, meta_file = export_backbone(run, tmp_path / "b.safetensors")
    meta = json.loads(meta_file.read_text())

    (tmp_path / "lonely.safetensors").write_bytes(weights.read_bytes())
    with pytest.raises(EsslError, match="lonely.json"):
        load_backbone(tmp_path / "lonely.safetensors")

    (tmp_path / "cut.safetensors").write_bytes(weights.read_bytes()[:1000])
    (tmp_path / "cut.json").write_text(meta_file.read_text())
    with pytest.raises(EsslError, match="corrupt"):
        load_backbone(tmp_path / "cut.safetensors")

    (tmp_path / "wrong.safetensors").write_bytes(weights.read_bytes())
    (tmp_path / "wrong.json").write_text(json.dumps({**meta, "architecture": "resnet50"}))
    with pytest.raises(EsslError, match="do not fit a resnet50"):
        load_backbone(tmp_path / "wrong.safetensors")

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EsslError, match="junk.pt"):
        load_backbone(tmp_path / "junk.pt")


def test_cli_export(run, tmp_path, capsys):
    assert main(["export", str(run), str(tmp_path / "cli"), "--format", "pt"]) == 0
    out = capsys.readouterr().out
    assert "cli.pt" in out and "512-d features" in out
    assert main(["export", str(run), str(tmp_path / "cli.pt")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_export_a_milestone_and_warm_start_from_the_safetensors(tmp_path, capsys):
    from essl.training.pretrain import Pretrainer

    tiny = ["subset=16", "batch_size=8", "knn_every=0", "precision=fp32", "num_threads=1"]
    run = pretrain(
        load_config("mnist5k-simclr", [*tiny, "epochs=2", "keep_checkpoints=1"]), tmp_path / "r", progress=False
    )
    assert main(["export", str(run), str(tmp_path / "e1"), "--checkpoint", "epoch_0001"]) == 0
    meta = json.loads((tmp_path / "e1.json").read_text())
    assert (meta["checkpoint"]["epoch"], meta["checkpoint"]["milestone"]) == (1, "epoch_0001")
    assert meta["in_channels"] == 1 and meta["data_image_size"] == 28  # from the run's run.json
    first, _ = load_backbone(tmp_path / "e1.safetensors")
    assert same_features(first, load_backbone(run / "checkpoints" / "epoch_0001.pt")[0])
    assert not same_features(first, load_backbone(run)[0])  # not the last checkpoint
    assert main(["export", str(run), str(tmp_path / "e9"), "--checkpoint", "epoch_0009"]) == 2
    assert "kept: epoch_0001" in capsys.readouterr().err and not (tmp_path / "e9.safetensors").exists()

    cfg = load_config("mnist5k-simclr", [*tiny, "epochs=1", f"init_from={tmp_path / 'e1.safetensors'}"])
    trainer = Pretrainer(cfg, tmp_path / "unused", progress=False)
    assert trainer.warm_start(cfg.init_from)["loaded"] == ["backbone"]
    assert same_features(first, trainer.model.backbone.eval())
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(EsslError, match="Cannot read .*bad.safetensors as safetensors"):
        trainer.warm_start(str(tmp_path / "bad.safetensors"))
