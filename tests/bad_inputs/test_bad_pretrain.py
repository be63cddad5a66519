"""Bad inputs of ``essl pretrain`` and ``essl presets``: settings, presets and overrides."""

import pytest

from .harness import Case, check, params, write_file

# a cheap base so that a bad setting that is accepted by mistake trains for seconds, not minutes
CHEAP = ("epochs=1", "subset=64", "batch_size=32", "knn_every=0", "num_threads=1", "precision=fp32", "warmup_epochs=0")


def pre(
    case_id: str,
    *overrides: str,
    names: tuple[str, ...],
    fix: str | None = None,
    preset: str = "mnist5k-simclr",
    open: str | None = None,
    setup=None,
) -> Case:
    """``essl pretrain PRESET <cheap settings> OVERRIDES --out r``: nothing may be written to r."""
    return Case(
        case_id,
        ("pretrain", preset, *CHEAP, *overrides, "--out", "r", "--no-progress"),
        names,
        fix,
        setup=setup,
        open=open,
    )


EQ = "equivariance=[{group: rotation, weight: %s, view: mnist_small, head: small, samples: %s}]"

CASES = [
    # ranges and finiteness of single settings
    pre("final_lr_ratio-negative", "final_lr_ratio=-1", names=("final_lr_ratio", "-1")),
    pre("knn_k-zero", "knn_every=1", "knn_k=0", names=("knn_k",)),
    pre("knn_k-negative", "knn_every=1", "knn_k=-5", names=("knn_k", "-5")),
    pre("knn_t-zero", "knn_every=1", "knn_t=0", names=("knn_t",)),
    pre("knn_t-nan", "knn_t=nan", names=("knn_t", "nan")),
    pre("lr-nan", "lr=nan", names=("lr", "nan")),
    pre("lr-inf", "lr=inf", names=("lr", "inf")),
    pre("lr-negative", "lr=-0.1", names=("lr", "-0.1")),
    pre("temperature-nan", "temperature=nan", names=("temperature", "nan")),
    pre("temperature-inf", "temperature=.inf", names=("temperature", "inf")),
    pre("barlow_lambda-inf", "method=barlow_twins", "barlow_lambda=inf", names=("barlow_lambda", "inf")),
    pre("barlow_lambda-negative", "method=barlow_twins", "barlow_lambda=-1", names=("barlow_lambda", "-1")),
    pre("equivariance-weight-nan", EQ % (".nan", 0), names=("weight", "nan"), preset="mnist5k-esimclr"),
    pre("equivariance-weight-inf", EQ % ("inf", 0), names=("weight", "inf"), preset="mnist5k-esimclr"),
    pre("momentum-negative", "momentum=-1", names=("momentum", "-1")),
    pre("momentum-above-one", "momentum=1.5", names=("momentum", "1.5")),
    pre("weight_decay-negative", "weight_decay=-1", names=("weight_decay", "-1")),
    pre("weight_decay-nan", "weight_decay=nan", names=("weight_decay", "nan")),
    pre("batch_size-one", "batch_size=1", names=("batch_size", "1")),
    pre("predictor_hidden-zero", "method=simsiam", "predictor_hidden=0", names=("predictor_hidden", "0")),
    pre("image_size-zero", "image_size=0", names=("image_size", "0")),
    pre("seed-30-digits", "seed=123456789012345678901234567890", names=("seed", "123456789012345678901234567890")),
    pre("seed-negative", "seed=-1", names=("seed", "-1")),
    pre("subset-larger-than-dataset", "subset=10000", names=("subset", "10000", "4000")),
    pre("samples-larger-than-group", EQ % (0.4, 5), names=("samples", "5", "rotation", "4"), preset="mnist5k-esimclr"),
    pre("samples-negative", EQ % (0.4, -1), names=("samples", "-1"), preset="mnist5k-esimclr"),
    pre("num_threads-negative", "num_threads=-1", names=("num_threads", "-1")),
    pre("knn_every-negative", "knn_every=-1", names=("knn_every", "-1")),
    pre("views-size-zero", "views=mnist@0,mnist", names=("mnist@0",)),
    pre("views-unknown-recipe", "views=mnist,nosuchview", names=("nosuchview",)),
    pre("views-three", "views=mnist,mnist,mnist", names=("views",)),
    pre("warmup-negative", "warmup_epochs=-1", names=("warmup_epochs", "-1")),
    pre("warmup-nan", "warmup_epochs=nan", names=("warmup_epochs", "nan")),
    pre("lars_eta-negative", "optimizer=lars", "lars_eta=-1", names=("lars_eta", "-1")),
    pre("bias_norm_lr_scale-nan", "exclude_bias_norm=true", "bias_norm_lr_scale=nan", names=("bias_norm_lr_scale",)),
    pre("workers-negative", "workers=-1", names=("workers", "-1")),
    pre("epochs-zero", "epochs=0", names=("epochs", "0")),
    pre("epochs-not-a-number", "epochs=ten", names=("epochs", "ten")),
    pre("epochs-fraction", "epochs=1.5", names=("epochs", "1.5")),
    pre("compile-not-bool", "compile=maybe", names=("compile", "maybe")),
    pre("subset-negative", "subset=-3", names=("subset", "-3")),
    # names that must be known
    pre("unknown-setting", "lrr=0.1", names=("lrr",), fix=r"did you mean lr"),
    pre("unknown-method", "method=moco", names=("method", "moco")),
    pre("unknown-optimizer", "optimizer=adam", names=("optimizer", "adam")),
    pre("unknown-dataset", "dataset=svhn", names=("svhn",)),
    pre("unknown-backbone", "backbone=vit", names=("backbone", "vit")),
    pre("unknown-projector", "projector=huge", names=("projector", "huge")),
    pre("unknown-device", "device=tpu", names=("device", "tpu")),
    pre("unknown-group", EQ.replace("rotation", "spin") % (0.4, 0), names=("spin",), preset="mnist5k-esimclr"),
    pre(
        "unknown-head",
        EQ.replace("head: small", "head: giant") % (0.4, 0),
        names=("head", "giant"),
        preset="mnist5k-esimclr",
    ),
    pre("unknown-invariance", "invariances=[wobble]", names=("wobble",)),
    pre("cifar-without-data_root", "dataset=cifar10", names=("data_root",)),
    pre("unknown-logger", "logger=mlflow", names=("logger", "mlflow")),
    pre("channels-two", "channels=2", names=("channels", "2")),
    pre("channels-on-a-builtin-dataset", "channels=1", names=("channels", "image folders")),
    pre("dataset-memory-on-the-command-line", "dataset=memory", names=("dataset=memory", "essl.pretrain", "npy")),
    pre("cifar-missing-folder", "dataset=cifar10", "data_root=nowhere", names=("nowhere",)),
    # presets and the command line
    Case("preset-unknown", ("pretrain", "no-such-preset", "--out", "r"), ("no-such-preset",)),
    Case(
        "preset-file-is-a-list",
        ("pretrain", "p.yaml", "--out", "r"),
        ("p.yaml", "mapping"),
        setup=write_file("p.yaml", "- lr: 0.1\n"),
    ),
    Case(
        "preset-file-bad-yaml",
        ("pretrain", "p.yaml", "--out", "r"),
        ("p.yaml",),
        setup=write_file("p.yaml", "lr: [0.1\n"),
    ),
    Case(
        "override-without-equals", ("pretrain", "mnist5k-simclr", "epochs", "--out", "r"), ("epochs",), fix="key=value"
    ),
    Case(
        "override-after-option-bad-value",
        ("pretrain", "mnist5k-simclr", "--no-progress", "lr=nan", "--out", "r"),
        ("lr", "nan"),
    ),
    Case("presets-show-unknown", ("presets", "--show", "nope"), ("nope",)),
]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(case, tmp_path):
    check(case, tmp_path)
