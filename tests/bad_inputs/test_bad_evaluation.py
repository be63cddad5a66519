"""Bad inputs of ``essl knn | probe | finetune | diagnose | report`` (evaluation options, run folders)."""

import pytest

from .harness import Case, both, check, copy_in, image_folder, params, tiny_run, write_file

RUN = copy_in(tiny_run, "run")
FOLDER = copy_in(image_folder, "data")


def ev(
    case_id: str, *argv: str, names: tuple[str, ...], fix: str | None = None, setup=RUN, open: str | None = None
) -> Case:
    return Case(case_id, tuple(argv), names, fix, setup=setup, open=open)


CASES = [
    # kNN options
    ev("knn-k-zero", "knn", "run", "--k", "0", names=("--k", "0")),
    ev("knn-k-negative", "knn", "run", "--k", "-5", names=("--k", "-5")),
    ev("knn-k-larger-than-bank", "knn", "run", "--k", "500", names=("--k", "500", "32")),
    ev("knn-t-zero", "knn", "run", "--t", "0", names=("--t", "0")),
    ev("knn-t-nan", "knn", "run", "--t", "nan", names=("--t", "nan")),
    ev("knn-t-inf", "knn", "run", "--t", "inf", names=("--t", "inf")),
    ev("knn-threads-negative", "knn", "run", "--threads", "-1", names=("--threads", "-1")),
    ev("knn-image-size-zero", "knn", "run", "--image-size", "0", names=("--image-size", "0")),
    ev("knn-no-run", "knn", "nowhere", names=("nowhere",), setup=None),
    ev("knn-not-a-run", "knn", "data", names=("data", "checkpoint"), setup=FOLDER),
    ev("knn-nothing-named", "knn", names=("run folder", "--backbone-file"), fix="name a run folder", setup=None),
    ev(
        "knn-backbone-file-missing",
        "knn",
        "--backbone-file",
        "w.pt",
        "--dataset",
        "folder",
        "--data-root",
        "data",
        names=("w.pt",),
        setup=FOLDER,
    ),
    # linear probe
    ev("probe-weight-decay-negative", "probe", "run", "--weight-decay", "-1", names=("--weight-decay", "-1")),
    ev("probe-weight-decay-nan", "probe", "run", "--weight-decay", "nan", names=("--weight-decay", "nan")),
    ev("probe-label-fraction-zero", "probe", "run", "--label-fraction", "0", names=("--label-fraction", "0")),
    ev("probe-label-fraction-above-one", "probe", "run", "--label-fraction", "1.5", names=("--label-fraction", "1.5")),
    ev("probe-label-fraction-nan", "probe", "run", "--label-fraction", "nan", names=("--label-fraction", "nan")),
    ev("probe-epochs-zero", "probe", "run", "--protocol", "cifar", "--epochs", "0", names=("--epochs", "0")),
    ev("probe-epochs-negative", "probe", "run", "--protocol", "cifar", "--epochs", "-2", names=("--epochs", "-2")),
    ev("probe-repeats-zero", "probe", "run", "--protocol", "cifar", "--repeats", "0", names=("--repeats", "0")),
    ev(
        "probe-batch-size-zero", "probe", "run", "--protocol", "cifar", "--batch-size", "0", names=("--batch-size", "0")
    ),
    ev(
        "probe-epochs-with-lbfgs", "probe", "run", "--epochs", "3", names=("--epochs", "linear_lbfgs"), fix="applies to"
    ),
    ev("probe-unknown-protocol", "probe", "run", "--protocol", "sgd", names=("--protocol", "sgd")),
    ev("probe-seed-negative", "probe", "run", "--seed", "-1", names=("--seed", "-1")),
    # fine-tuning
    ev("finetune-epochs-zero", "finetune", "run", "--epochs", "0", names=("--epochs", "0")),
    ev("finetune-label-fraction-two", "finetune", "run", "--label-fraction", "2", names=("--label-fraction", "2")),
    ev("finetune-batch-size-negative", "finetune", "run", "--batch-size", "-8", names=("--batch-size", "-8")),
    # diagnostics
    ev("diagnose-max-train-zero", "diagnose", "run", "--max-train", "0", names=("--max-train", "0")),
    ev("diagnose-unknown-group", "diagnose", "run", "--group", "spin", names=("spin",)),
    ev("diagnose-seed-30-digits", "diagnose", "run", "--seed", "123456789012345678901234567890", names=("--seed",)),
    # report
    ev("report-not-a-run", "report", "data", names=("data",), fix="run `essl pretrain", setup=FOLDER),
    ev("report-missing-folder", "report", "nowhere", names=("nowhere",), setup=None),
    ev(
        "report-bad-config",
        "report",
        "run",
        names=("config.yaml",),
        setup=both(RUN, write_file("run/config.yaml", "lr: [0.1\n")),
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(case, tmp_path):
    check(case, tmp_path)
