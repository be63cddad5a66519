"""``essl sweep``: the invariance-vs-equivariance transformation sweep (Dangovski et al. 2022;
re-run by Wang et al., NeurIPS 2024, kaotty/Understanding-ESSL) as one resumable command.

For a base preset, a list of transformations ``T`` and ``n`` seeds it trains, per seed,

- ``baseline``: SSL with random resized cropping as the only augmentation (the paper's sweep setting);
- ``issl``: the same plus ``T`` as an invariance (a uniformly drawn element applied to each SSL view,
  config ``invariances: [T]``);
- ``essl``: the same as the baseline plus ``λ·CE(h(f(g·x_small)), g)`` over all elements of ``T``
  (config ``equivariance: [{group: T, weight: λ, view: <small crop>, head: ...}]``),

evaluates each run with a named protocol (``knn`` or ``linear_lbfgs`` of :mod:`essl.evaluation.commands`) and
reports, per transformation and mode, the mean ± std over seeds and the seed-paired difference to the baseline
as a markdown table, a JSON file and a bar chart in the style of the paper's figure.

Layout of ``SWEEP_DIR``: one ``essl pretrain`` run folder per run (``baseline-seed0/``, ``rotation-issl-seed0/``,
``rotation-essl-seed0/`` …; its result in ``<run>/eval/<protocol>.json``), ``sweep.json`` (the plan),
``results.json``, ``results.md`` and ``sweep.png``. Every file is written atomically. Rerunning the same command
skips finished runs, evaluates trained-but-unevaluated ones, resumes a run from its last epoch checkpoint and
restarts a run that was stopped before its first checkpoint; a run folder trained with other settings is an
error, never overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from essl.augmentation import resolve_view
from essl.data import load_dataset
from essl.data.sources import check_subset
from essl.errors import EsslError
from essl.evaluation.evaluate import evaluate_knn, evaluate_linear_lbfgs
from essl.evaluation.plots import figure, png
from essl.evaluation.report import markdown_lines
from essl.experiments.catalog import PAPER_TRANSFORMS, SWEEP_PROTOCOLS
from essl.experiments.lifecycle import check_settings, ensure_run, run_state, setting_differences
from essl.groups import make_group
from essl.runs import (
    LOCK,
    RESULTS_JSON,
    RESULTS_MD,
    check_writable,
    claim_folder,
    create_file,
    experiment_files,
    has_config,
    read_config,
    read_metrics,
    read_result,
    write_files,
)
from essl.training.config import EquivarianceTask, PretrainConfig, config_from_dict, load_config
from essl.training.cost import backbone_passes, pretraining_seconds, seconds_text
from essl.training.validation import option_rule

#: The seven transformations of the paper's sweep, in the order of its figure.
MODES = ("baseline", "issl", "essl")
#: The sweep's own files in SWEEP_DIR, besides results.md and results.json: the plan and the chart.
SWEEP_FILE = "sweep.json"
SWEEP_PNG = "sweep.png"
#: What a sweep folder holds (essl.runs ownership rule): the plan, table, JSON, chart and its run folders.
SWEEP_FILES = experiment_files(SWEEP_FILE, SWEEP_PNG)


@dataclass(frozen=True)
class SweepRun:
    """One pretraining run of the sweep: ``transform`` is None for the baseline."""

    transform: str | None
    mode: str
    seed: int

    @property
    def name(self) -> str:
        return (
            f"baseline-seed{self.seed}" if self.mode == "baseline" else f"{self.transform}-{self.mode}-seed{self.seed}"
        )


# ------------------------------------------------------------------------------------------------ planning
def default_views(dataset: str) -> tuple[str, str]:
    """(SSL view recipe, prediction-crop recipe) of the crop-only sweep for a dataset: 28/14 px for MNIST-5k,
    32/16 px otherwise (half-resolution prediction crops, as the paper's CIFAR-10 16-px crops)."""
    return ("crop_only_mnist", "crop_only_mnist_small") if dataset == "mnist5k" else ("crop_only", "crop_only_small")


def default_head(backbone: str, method: str) -> str:
    """The prediction head that fits the backbone (as in rdangovs/essl ``cifar10/main.py``)."""
    if backbone == "small_cnn":
        return "small"
    return "cifar_simsiam" if method == "simsiam" else "cifar_simclr"


def plan_runs(transforms: list[str], seeds: list[int]) -> list[SweepRun]:
    """All runs, seed-major (every seed's baseline and transformations before the next seed), so that a sweep
    stopped early holds complete seeds."""
    runs = []
    for seed in seeds:
        runs.append(SweepRun(None, "baseline", seed))
        for t in transforms:
            runs += [SweepRun(t, "issl", seed), SweepRun(t, "essl", seed)]
    return runs


def run_config(
    base: PretrainConfig, run: SweepRun, weight: float, pred_view: str | dict, head: str, samples: int = 0
) -> PretrainConfig:
    """The :class:`PretrainConfig` of one run: the base (crop-only views, nothing predicted) plus ``T``."""
    cfg = dataclasses.replace(base, seed=run.seed, invariances=[], equivariance=[])
    if run.transform is None:  # the baseline
        cfg.validate()
        return cfg
    if run.mode == "issl":
        cfg.invariances = [run.transform]
    elif run.mode == "essl":
        cfg.equivariance = [
            EquivarianceTask(group=run.transform, weight=weight, view=pred_view, head=head, samples=samples)
        ]
    cfg.validate()
    return cfg


def transform_problem(name: str, channels: int, view_size: int, pred_size: int) -> str | None:
    """Why ``name`` cannot be swept on these images (e.g. grayscale on 1-channel data), or None if it can.

    The invariance acts on the SSL views, the prediction on the small crops; both must be valid.
    """
    group = make_group(name)
    if not group.finite:
        return f"{name!r} is a continuous transformation: it cannot be predicted"
    for what, size in (("SSL views", view_size), ("prediction crops", pred_size)):
        try:
            group.check_shape((1, channels, size, size))
        except EsslError as exc:
            return f"{exc} (on the {size}-px {what})"
    return None


# ------------------------------------------------------------------------------------------------ one run
def evaluate_run(run_dir: Path, protocol: str) -> float:
    """Evaluate a trained run with ``protocol``; the result is written to ``run_dir/eval/<protocol>.json``."""
    result = (evaluate_knn if protocol == "knn" else evaluate_linear_lbfgs)(run_dir)
    return float(result["top1"])


def execute_run(run_dir: Path, cfg: PretrainConfig, protocol: str, progress: bool = False) -> tuple[str, float]:
    """Bring one run to ``done`` (trained by :func:`~essl.experiments.lifecycle.ensure_run`, then evaluated);
    returns (the state it was found in, its accuracy)."""
    state = ensure_run(cfg, run_dir, result=protocol, progress=progress)
    if state != "done":
        evaluate_run(run_dir, protocol)
    accuracy = read_accuracy(run_dir, protocol)
    assert accuracy is not None  # evaluate_run wrote it
    return state, accuracy


def read_accuracy(run_dir: Path, protocol: str) -> float | None:
    result = read_result(run_dir, protocol)
    return float(result["top1"]) if result is not None else None


# ------------------------------------------------------------------------------------------------ summary
def _mean_std(values: list[float]) -> dict[str, Any]:
    n = len(values)
    if not n:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def summarize(accuracies: dict[str, float], transforms: list[str], seeds: list[int]) -> dict[str, Any]:
    """Mean ± sample std (ddof 1) over seeds of every (transformation, mode), and the difference to the
    baseline paired by seed (the same seed gives the same initialisation and data order) with its own std."""
    base = {s: accuracies.get(SweepRun(None, "baseline", s).name) for s in seeds}
    out: dict[str, Any] = {"baseline": _mean_std([v for v in base.values() if v is not None]), "transforms": {}}
    for t in transforms:
        row = {}
        for mode in ("issl", "essl"):
            acc = {s: accuracies.get(SweepRun(t, mode, s).name) for s in seeds}
            deltas = [a - b for s in seeds if (a := acc[s]) is not None and (b := base[s]) is not None]
            row[mode] = {**_mean_std([v for v in acc.values() if v is not None]), "delta": _mean_std(deltas)}
        out["transforms"][t] = row
    return out


def _fmt(stat: dict[str, Any], signed: bool = False) -> str:
    if stat["mean"] is None:
        return "–"
    text = f"{stat['mean']:+.2f}" if signed else f"{stat['mean']:.2f}"
    return text + (f" ± {stat['std']:.2f}" if stat["std"] is not None else "")


def collect_costs(out: Path, runs: list[SweepRun]) -> dict[str, dict[str, Any]]:
    """What every started run of the plan in ``out`` cost: pixel-weighted backbone passes per image and step
    (from its config) and measured pretraining time (from its metrics; :mod:`essl.training.cost`)."""
    costs = {}
    for r in runs:
        folder = Path(out) / r.name
        if has_config(folder):
            costs[r.name] = {
                "passes": backbone_passes(read_config(folder))["grad"],
                "seconds": pretraining_seconds(read_metrics(folder)),
            }
    return costs


def cost_cells(costs: dict[str, dict[str, Any]], names: list[str]) -> tuple[str, str]:
    """``(passes, mean measured time)`` over the seeds' runs ``names`` (``–`` where none has run)."""
    found = [costs[n] for n in names if n in costs]
    seconds = [c["seconds"] for c in found if c["seconds"] is not None]
    passes = f"{found[0]['passes']:.2f}" if found else "–"
    return passes, seconds_text(sum(seconds) / len(seconds) if seconds else None)


def markdown_table(
    summary: dict[str, Any],
    protocol: str,
    skipped: dict[str, str] | None = None,
    costs: dict[str, dict[str, Any]] | None = None,
    seeds: list[int] | None = None,
) -> str:
    """The results as a markdown table (accuracy in %, Δ in percentage points vs the baseline); with ``costs``
    (:func:`collect_costs`) and ``seeds``, each row also gives the runs' backbone passes and measured time."""
    b = summary["baseline"]
    costs, seeds = costs or {}, seeds or []

    def cost(t: str | None, modes: tuple[str, ...]) -> list[str]:
        if not costs:
            return []
        cells = [cost_cells(costs, [SweepRun(t, m, s).name for s in seeds]) for m in modes]
        return [" / ".join(c[0] for c in cells), " / ".join(c[1] for c in cells)]

    rows = [["baseline (crop only)", _fmt(b), "", "", "", *cost(None, ("baseline",))]]
    for t, row in summary["transforms"].items():
        i, e = row["issl"], row["essl"]
        rows.append([t, _fmt(i), _fmt(i["delta"], True), _fmt(e), _fmt(e["delta"], True), *cost(t, ("issl", "essl"))])
    rows += [[t, "skipped", "", "skipped", "", *(["", ""] if costs else [])] for t in skipped or {}]
    header = ["transformation", f"I-SSL {protocol} top-1", "Δ I-SSL", f"E-SSL {protocol} top-1", "Δ E-SSL"]
    if costs:
        header += ["backbone passes / image / step (I / E)", "pretrain time, mean (I / E)"]
    text = "\n".join(markdown_lines(header, rows)) + "\n"
    n = b["n"]
    text += (
        f"\nTop-1 accuracy in % ({protocol}), mean ± sample std over {n} seed(s); Δ is the seed-paired "
        f"difference to the baseline in percentage points (mean ± std of the per-seed differences).\n"
    )
    if costs:
        text += (
            "Backbone passes: images through the backbone per training image and step, weighted by pixel count "
            "(a prediction crop of half the side counts 1/4); pretrain time: measured training steps per run. "
            "I-SSL costs what the baseline costs; E-SSL is an equal-epoch, not an equal-cost, comparison.\n"
        )
    for t, why in (skipped or {}).items():
        text += f"\n- {t} skipped: {why}\n"
    return text


def plot_summary(summary: dict[str, Any], title: str) -> bytes:
    """Bar chart in the style of the paper's sweep figure: per transformation, the I-SSL and E-SSL difference to
    the baseline (percentage points) with ± std error bars (PNG bytes)."""
    names = list(summary["transforms"])
    fig = figure(max(5.0, 0.9 * len(names) + 1.5), 3.4)
    ax = fig.subplots()
    width = 0.38
    for j, (mode, label, colour) in enumerate(
        (("issl", "I-SSL (invariance)", "#d9822b"), ("essl", "E-SSL (prediction)", "#2b6cb0"))
    ):
        deltas = [summary["transforms"][t][mode]["delta"] for t in names]
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        means = [d["mean"] if d["mean"] is not None else math.nan for d in deltas]
        stds = [d["std"] if d["std"] is not None else math.nan for d in deltas]
        ax.bar(
            xs,
            means,
            width,
            label=label,
            color=colour,
            yerr=None if all(map(math.isnan, stds)) else stds,
            capsize=3,
            error_kw={"elinewidth": 1},
        )
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("Δ top-1 vs baseline (pp)")
    b = summary["baseline"]
    if b["mean"] is not None:
        spread = f" ± {b['std']:.1f}" if b["std"] is not None else ""
        title += f"\nbaseline (crop only) {b['mean']:.1f}{spread}%; bars: seed-paired Δ, mean ± std"
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return png(fig)


def check_sweep_settings(out: Path, spec: SweepSpec, base: PretrainConfig) -> None:
    """Refuse a command whose settings differ from the sweep started in ``out`` (its ``sweep.json``), so that
    shards or reruns with other settings (e.g. other epochs) never mix into one table. Changes nothing."""
    path = Path(out) / SWEEP_FILE
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text())
        stored_spec, stored_base = dict(stored["spec"]), config_from_dict(dict(stored["base_config"])).to_dict()
    except (ValueError, KeyError, TypeError, EsslError) as exc:
        raise EsslError(
            f"{path} cannot be read as a sweep plan ({type(exc).__name__}: {exc}); it is left "
            f"untouched. Choose another --out, or delete {path} if the sweep is yours to restart."
        ) from None
    # the preset name and the override list count through the base config (where data_root etc. may differ)
    wanted = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("preset", "overrides")}
    stored_spec = {k: stored_spec.get(k, SWEEP_SPEC_DEFAULTS[k]) for k in wanted}
    names = ("sweep.json", "this command")
    diff = setting_differences(stored_spec, wanted, names) + setting_differences(stored_base, base.to_dict(), names)
    if diff:
        raise EsslError(
            f"The sweep in {out} was started with other settings: {'; '.join(diff[:5])}. Nothing was "
            f"written. Give this command the settings recorded in {path}, or choose another --out."
        )


# ------------------------------------------------------------------------------------------------ the sweep
@dataclass
class SweepSpec:
    """Everything that defines a sweep (stored in ``SWEEP_DIR/sweep.json``)."""

    preset: str
    overrides: list[str]
    transforms: list[str]
    seeds: list[int]
    weight: float
    protocol: str
    view: str | dict  # a view setting: NAME, NAME@SIZE or a mapping (essl.augmentation.resolve_view)
    pred_view: str | dict
    head: str
    samples: int = 0


SWEEP_SPEC_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SweepSpec)}


def parse_view(text: str | dict | None) -> str | dict | None:
    """``--view``: a recipe name, ``NAME@SIZE``, or a YAML mapping such as ``{recipe: crop_only, scale: [0.5, 1]}``."""
    if isinstance(text, str) and text.strip().startswith("{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise EsslError(f"--view {text!r} is not a valid mapping: {exc}") from None
    return text


def build_spec(
    preset: str,
    overrides: list[str],
    transforms: list[str] | None,
    seeds: int,
    weight: float,
    protocol: str,
    view: str | dict | None = None,
    pred_view: str | dict | None = None,
    head: str | None = None,
    samples: int = 0,
) -> tuple[SweepSpec, PretrainConfig]:
    """Validate the user's choices; returns ``(spec, base config)``. The base config is the preset plus
    overrides with crop-only views, nothing predicted, no invariances and the kNN monitor off."""
    if protocol not in SWEEP_PROTOCOLS:
        raise EsslError(f"--protocol must be one of {', '.join(SWEEP_PROTOCOLS)}, got {protocol!r}.")
    for flag, dest, value in (
        ("--seeds", "seeds", seeds),
        ("--weight", "weight", weight),
        ("--pred-samples", "pred_samples", samples),
    ):
        rule = option_rule("sweep", dest)  # essl/training/validation.py
        assert rule is not None, f"no validation rule for sweep option {dest}"
        rule.check(flag, value)
    transforms = list(PAPER_TRANSFORMS if transforms is None else transforms)
    if not transforms:
        raise EsslError("--transforms is empty; name at least one, e.g. --transforms rotation,hflip.")
    if len(set(transforms)) != len(transforms):
        raise EsslError(f"--transforms lists a transformation twice: {','.join(transforms)}.")
    for t in transforms:
        make_group(t)  # unknown names raise with the list of known ones
    base = load_config(preset, overrides)
    dv, dp = default_views(base.dataset)
    ssl_view: str | dict = parse_view(view) or dv
    small_view: str | dict = parse_view(pred_view) or dp
    head = head or default_head(base.backbone, base.method)
    resolve_view(ssl_view), resolve_view(small_view)
    base = dataclasses.replace(base, views=[ssl_view, ssl_view], invariances=[], equivariance=[], knn_every=0)
    base.validate()
    for t in transforms:  # the prediction runs' settings (e.g. --pred-samples at most the group's order)
        if make_group(t).finite:
            run_config(base, SweepRun(t, "essl", 0), weight, small_view, head, samples)
    spec = SweepSpec(
        preset,
        list(overrides),
        transforms,
        list(range(seeds)),
        float(weight),
        protocol,
        ssl_view,
        small_view,
        head,
        samples,
    )
    return spec, base


def run_sweep(
    spec: SweepSpec,
    base: PretrainConfig,
    out: Path,
    progress: bool = False,
    report_only: bool = False,
    log=print,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """Run (or continue) every run of the sweep, then write the table, JSON and chart. Returns the results.

    ``shard = (i, n)`` runs only the runs whose position in :func:`plan_runs` is ``i`` modulo ``n``, so ``n``
    processes (one per GPU, or one single-threaded process per CPU core) can share a sweep folder; each report
    includes every finished run found on disk."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EsslError(f"{out} exists and is not a folder; choose another --out.")
    if report_only and not out.is_dir():
        raise EsslError(f"No sweep folder at {out}; --report rebuilds the table of an existing sweep.")
    check_writable(out, "sweep", SWEEP_FILES, (SWEEP_FILE,))  # a folder holding anything else is refused
    check_sweep_settings(out, spec, base)  # a shard with other settings changes nothing in the folder
    train = load_dataset(base.dataset, "train", base.data_root, base.image_size, base.channels)
    check_subset(base.subset, len(train), base.dataset)
    channels = train.channels
    view_size, pred_size = resolve_view(spec.view).size, resolve_view(spec.pred_view).size
    skipped = {
        t: why for t in spec.transforms if (why := transform_problem(t, channels, view_size, pred_size)) is not None
    }
    for t, why in skipped.items():
        log(f"skipping {t}: {why}")
    transforms = [t for t in spec.transforms if t not in skipped]
    runs = plan_runs(transforms, spec.seeds)
    configs = {run.name: run_config(base, run, spec.weight, spec.pred_view, spec.head, spec.samples) for run in runs}
    for run in runs:  # every run of the plan (all shards share the table): refused before anything is written
        check_settings(out / run.name, configs[run.name])
    k, n = shard
    lock = None if report_only else f"{LOCK}.shard-{k}-of-{n}"  # one process per shard; shards share the folder
    where = f"shard {k}/{n} of the sweep {out}"
    with claim_folder(out, "sweep", SWEEP_FILES, keep=True, lock=lock, what=where, signature=(SWEEP_FILE,)):
        return _run_shard(spec, base, out, runs, configs, transforms, skipped, progress, report_only, log, shard)


def _run_shard(
    spec: SweepSpec,
    base: PretrainConfig,
    out: Path,
    runs: list[SweepRun],
    configs: dict[str, PretrainConfig],
    transforms: list[str],
    skipped: dict[str, str],
    progress: bool,
    report_only: bool,
    log: Any,
    shard: tuple[int, int],
) -> dict[str, Any]:
    """The runs of one shard, and the report, in the claimed sweep folder ``out``."""
    if not report_only:
        plan = (
            json.dumps({"spec": dataclasses.asdict(spec), "base_config": base.to_dict(), "skipped": skipped}, indent=2)
            + "\n"
        )
        if not create_file(out / SWEEP_FILE, plan):  # written once; later shards and reruns compare
            check_sweep_settings(out, spec, base)
    t_start = time.perf_counter()
    k, n = shard
    for i, run in enumerate(runs, 1):
        run_dir, cfg = out / run.name, configs[run.name]
        if report_only:
            if read_accuracy(run_dir, spec.protocol) is not None:
                run_state(run_dir, cfg, spec.protocol)  # refuses results trained with other settings
            continue
        if (i - 1) % n != k:
            continue
        t0 = time.perf_counter()
        state, acc = execute_run(run_dir, cfg, spec.protocol, progress)
        what = {
            "done": "already finished",
            "trained": "evaluated",
            "resume": "resumed and finished",
            "restart": "restarted and finished",
            "fresh": "finished",
        }[state]
        log(
            f"[{i}/{len(runs)}] {run.name}: {what} in {time.perf_counter() - t0:.0f} s, {spec.protocol} top-1 "
            f"{acc:.2f}%  (sweep {(time.perf_counter() - t_start) / 60:.1f} min)"
        )
        write_report(out, spec, base, collect(out, runs, spec.protocol), transforms, skipped, plot=False)
    return write_report(out, spec, base, collect(out, runs, spec.protocol), transforms, skipped, plot=True)


def collect(out: Path, runs: list[SweepRun], protocol: str) -> dict[str, float]:
    """Accuracy of every finished run of the plan found in ``out``."""
    found = {r.name: read_accuracy(Path(out) / r.name, protocol) for r in runs}
    return {name: acc for name, acc in found.items() if acc is not None}


def write_report(
    out: Path,
    spec: SweepSpec,
    base: PretrainConfig,
    accuracies: dict[str, float],
    transforms: list[str],
    skipped: dict[str, str],
    plot: bool = True,
) -> dict[str, Any]:
    summary = summarize(accuracies, transforms, spec.seeds)
    results = {
        "protocol": spec.protocol,
        "dataset": base.dataset,
        "method": base.method,
        "backbone": base.backbone,
        "epochs": base.epochs,
        "batch_size": base.batch_size,
        "weight": spec.weight,
        "seeds": spec.seeds,
        "view": spec.view,
        "pred_view": spec.pred_view,
        "head": spec.head,
        "pred_samples": spec.samples,
        "skipped": skipped,
        "runs": accuracies,
        "summary": summary,
    }
    costs = results["costs"] = collect_costs(out, plan_runs(transforms, spec.seeds))
    files: dict[str, str | bytes] = {
        RESULTS_JSON: json.dumps(results, indent=2) + "\n",
        RESULTS_MD: markdown_table(summary, spec.protocol, skipped, costs, spec.seeds),
    }
    if plot and any(
        summary["transforms"][t][m]["delta"]["mean"] is not None for t in transforms for m in ("issl", "essl")
    ):
        title = (
            f"{base.method} on {base.dataset}, {base.epochs} epoch(s), {len(spec.seeds)} seed(s), "
            f"{spec.protocol} top-1, λ={spec.weight:g}"
        )
        files[SWEEP_PNG] = plot_summary(summary, title)
    write_files(out, files)
    return results


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)`` with ``0 <= I < N``."""
    i, sep, n = str(text).partition("/")
    try:
        k, m = int(i), int(n)
    except ValueError:
        k, m = -1, 0
    if not sep or m < 1 or not 0 <= k < m:
        raise EsslError(
            f"--shard must look like I/N with 0 <= I < N (e.g. 0/2 and 1/2 for two processes), got {text!r}."
        )
    return k, m
