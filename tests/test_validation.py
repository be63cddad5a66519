"""The validation table (essl/training/validation.py): every setting and every numeric option has a rule."""

import argparse
import dataclasses
import math

import pytest

from essl.cli import build_parser, main
from essl.errors import EsslError
from essl.training.config import EquivarianceTask, PretrainConfig, config_from_dict, list_presets, load_config
from essl.training.validation import CONFIG_RULES, TASK_RULES, Float, Int, Rule, option_rule


def test_every_config_field_has_a_rule():
    assert {f.name for f in dataclasses.fields(PretrainConfig)} == set(CONFIG_RULES)
    assert {f.name for f in dataclasses.fields(EquivarianceTask)} == set(TASK_RULES)


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}".strip())
    yield prefix, parser


def test_every_numeric_option_has_a_rule():
    missing = []
    for command, parser in _commands(build_parser()):
        for action in parser._actions:
            numeric = action.type in (int, float) or getattr(action.type, "__name__", "") == "positive_int"
            if numeric and option_rule(command, action.dest) is None:
                missing.append(f"essl {command} {action.option_strings}")
    assert not missing, missing


@pytest.mark.parametrize("name", list_presets())
def test_presets_pass_the_rules(name):
    assert load_config(name).to_dict() == config_from_dict(load_config(name).to_dict()).to_dict()


def test_rules_coerce_and_check():
    assert Int(ge=1).coerce("n", "12") == 12 and Float().coerce("x", "1e-3") == 1e-3
    assert Rule("bool").coerce("b", "false") is False
    assert Rule("names").coerce("v", "a, b") == ["a", "b"]
    for rule, value in ((Int(ge=1), 1.5), (Int(), "ten"), (Rule("bool"), "maybe"), (Float(), "x")):
        with pytest.raises(EsslError, match="must be"):
            rule.coerce("name", value)
    Float(gt=0).check("lr", 1e-9)
    for value in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(EsslError, match="lr must be a finite number > 0"):
            Float(gt=0).check("lr", value)
    with pytest.raises(EsslError, match=r"momentum must be a finite number in \[0, 1\]; got 1.5"):
        Float(ge=0, le=1).check("momentum", 1.5)


def test_data_size_rule_before_the_run_folder_is_written(tmp_path):
    from essl.training.pretrain import pretrain

    cfg = config_from_dict({"subset": 4001, "epochs": 1, "knn_every": 0})
    with pytest.raises(EsslError, match=r"subset=4001 is larger than the training set \(4000 images"):
        pretrain(cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_overrides_after_an_option(monkeypatch):
    seen = {}

    def fake_pretrain(cfg, out, **kw):
        seen.update(cfg=cfg, progress=kw["progress"])
        return out

    monkeypatch.setattr("essl.training.pretrain.pretrain", fake_pretrain)
    assert main(["pretrain", "mnist5k-simclr", "lr=0.2", "--no-progress", "epochs=3", "seed=4", "--out", "r"]) == 0
    assert (seen["cfg"].lr, seen["cfg"].epochs, seen["cfg"].seed, seen["progress"]) == (0.2, 3, 4, False)
    with pytest.raises(SystemExit):  # a misspelt option is still refused
        main(["pretrain", "mnist5k-simclr", "--no-progess", "epochs=3"])
