"""Config values are checked where they are read (range, choices, non-empty, length), once for every key of SCHEMA,
with messages naming the key, the value and what is expected; misspelt sections and devices are clear errors."""
import math
import subprocess
import sys

import pytest
import torch

from bupose.config import SCHEMA, Option, check_config, check_value, default_config, describe, load_config
from bupose.errors import ConfigError
from bupose.inference.predictor import resolve_device

from conftest import REPO, subprocess_env

#: Keys that take any value of their type: flags, free-form dicts, paths and names checked where they are used
#: (MODEL.NAME by build_method, DATASET.DATASET's entry by the catalogue). A new key gets a check or joins this list.
UNCHECKED = {
    "MODEL.NAME", "MODEL.PRETRAINED", "MODEL.SPEC", "MODEL.CODEC", "LOSS.GAINS", "TEST.MODEL_FILE",
    "TEST.COCO_BBOX_FILE", "TEST.DETECTOR_CFG", "TEST.DETECTOR_MODEL_FILE", "TEST.RESCORE_FILE",
    "TEST.KEYPOINT_THRESHOLD", "TEST.IMAGE_THRE", "TEST.IN_VIS_THRE",  # negative: keep everything
    "DATASET.STAGE2",  # each entry is checked as its DATASET key (tests/test_topdown_recipe.py)
}


def _has_checks(opt: Option) -> bool:
    return bool(opt.expectation())


def _bad_value(opt: Option):
    """A value of ``opt``'s type that breaks its first check."""
    if opt.choices or opt.pattern:
        return "not-an-allowed-value"
    if opt.nonempty:
        return [] if opt.type.startswith("list") else ""
    if opt.length is not None:
        return [1] * (opt.length + 1)
    as_type = (lambda v: [float(v)]) if opt.type == "list[float]" else (lambda v: [v]) if opt.type == "list[int]" \
        else float if opt.type == "float" else int
    for bound, step in ((opt.min, -1), (opt.gt, 0), (opt.max, 1), (opt.lt, 0)):
        if bound is not None:
            return as_type(bound + step)
    raise AssertionError(f"{opt.key}: no check to break")


def test_every_default_passes_its_own_checks():
    for opt in SCHEMA:
        assert check_value(opt.key, opt.default) == opt.default, opt.key
    check_config(default_config())


def test_every_key_is_checked_or_deliberately_free():
    free = {o.key for o in SCHEMA if not _has_checks(o) and o.type != "bool"}
    assert free == UNCHECKED


@pytest.mark.parametrize("opt", [o for o in SCHEMA if _has_checks(o)], ids=lambda o: o.key)
def test_every_check_refuses_a_bad_value_naming_key_value_and_expectation(opt):
    bad = _bad_value(opt)
    with pytest.raises(ConfigError) as info:
        load_config(None, [opt.key, repr(bad) if isinstance(bad, str) and bad else str(bad)])
    message = str(info.value)
    assert message.startswith(f"command line: {opt.key} is ") and opt.expectation() in message, message


@pytest.mark.parametrize("key,text,message", [
    ("TRAIN.IMAGES_PER_GPU", "0", "TRAIN.IMAGES_PER_GPU is 0; expected >= 1"),
    ("TRAIN.IMAGES_PER_GPU", "-1", "TRAIN.IMAGES_PER_GPU is -1; expected >= 1"),
    ("DATASET.MAX_TRAIN_IMAGES", "-5", "DATASET.MAX_TRAIN_IMAGES is -5; expected >= 0"),
    ("DATASET.ON_ERROR", "ignore", "DATASET.ON_ERROR is 'ignore'; expected one of ['raise', 'skip']"),
    ("DEVICE", "gpu", "DEVICE is 'gpu'; expected auto, cpu, cuda or cuda:N"),
    ("TEST.SCALE_FACTOR", "[-1]", "TEST.SCALE_FACTOR is [-1.0]; expected non-empty, each > 0"),
    ("TEST.SCALE_FACTOR", "[0]", "TEST.SCALE_FACTOR is [0.0]; expected non-empty, each > 0"),
    ("TEST.SCALE_FACTOR", "[]", "TEST.SCALE_FACTOR is []; expected non-empty, each > 0"),
    ("MODEL.IMAGE_SIZE", "[192]", "MODEL.IMAGE_SIZE is [192]; expected 2 values, each >= 1"),
    ("TEST.OKS_THRE", "-0.5", "TEST.OKS_THRE is -0.5; expected >= 0"),
    ("DATASET.FLIP", "50", "DATASET.FLIP is 50.0; expected >= 0 and <= 1"),
    ("TRAIN.LR", ".nan", "TRAIN.LR is nan; expected > 0 and a finite number"),
    ("TRAIN.OPTIMIZER", "Adam", "TRAIN.OPTIMIZER is 'Adam'; expected one of ['adam', 'adamw', 'sgd']"),
])
def test_reported_bad_values_are_clear_errors(key, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [key, text])
    assert str(info.value) == f"command line: {message}"


@pytest.mark.parametrize("key,text,value", [
    ("DEVICE", "cuda:1", "cuda:1"), ("DEVICE", "cpu", "cpu"), ("TEST.SCALE_FACTOR", "0.5", [0.5]),
    ("DATASET.MAX_TRAIN_IMAGES", "0", 0), ("TEST.IMAGE_THRE", "-1", -1.0), ("DATASET.FLIP", "1", 1.0),
])
def test_edge_values_that_are_allowed(key, text, value):
    assert load_config(None, [key, text]).get_key(key) == value


def test_a_bad_value_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("TRAIN:\n  IMAGES_PER_GPU: 0\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: TRAIN\.IMAGES_PER_GPU is 0; expected >= 1"):
        load_config(path)


def test_relations_between_keys_and_configs_changed_in_code():
    with pytest.raises(ConfigError, match=r"DATASET.MIN_SCALE is 2.0 and DATASET.MAX_SCALE is 1.5; expected "
                                          r"DATASET.MIN_SCALE <= DATASET.MAX_SCALE"):
        load_config(None, ["DATASET.MIN_SCALE", "2"])
    cfg = default_config()
    cfg.TRAIN.IMAGES_PER_GPU = 0
    assert cfg.get_key("TRAIN.IMAGES_PER_GPU") == 0 and cfg.to_dict()["TRAIN"]["IMAGES_PER_GPU"] == 0
    with pytest.raises(ConfigError, match="TRAIN.IMAGES_PER_GPU is 0; expected >= 1"):
        check_config(cfg)
    cfg.TRAIN.IMAGES_PER_GPU = 2
    cfg.TRAIN.END_EPOHC = 3
    with pytest.raises(ConfigError, match="unknown config key 'TRAIN.END_EPOHC'; did you mean 'TRAIN.END_EPOCH'"):
        check_config(cfg)
    del cfg.TRAIN["END_EPOHC"]
    del cfg.TEST["OKS_THRE"]
    with pytest.raises(ConfigError, match="config has no key TEST.OKS_THRE"):
        check_config(cfg)


def test_misspelt_section_is_named_with_the_closest_key_inside_it(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["TRIAN.LR", "0.1"])
    assert str(info.value) == ("command line: unknown section 'TRIAN' in config key 'TRIAN.LR'; did you mean "
                               "'TRAIN'? (closest key there: 'TRAIN.LR')")
    path = tmp_path / "exp.yaml"
    path.write_text("TRIAN:\n  END_EPOHC: 3\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: unknown section 'TRIAN' in config key 'TRIAN.END_EPOHC'; "
                                          r"did you mean 'TRAIN'\? \(closest key there: 'TRAIN.END_EPOCH'\)"):
        load_config(path)
    path.write_text("TSET:\n")  # a section with nothing under it
    with pytest.raises(ConfigError, match=r"unknown config key 'TSET'; did you mean the section 'TEST'\?"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown config key 'TRAIN.END_EPOHC'; did you mean 'TRAIN.END_EPOCH'"):
        load_config(None, ["TRAIN.END_EPOHC", "3"])  # a known section: the closest key as before


def test_describe_lists_what_each_key_allows():
    lines = describe().splitlines()
    assert lines[0].split() == ["KEY", "TYPE", "ALLOWED", "VALUE", "DOC"]
    row = next(line for line in lines if line.startswith("DATASET.ON_ERROR "))
    assert "one of ['raise', 'skip']" in row
    assert ">= 1" in next(line for line in lines if line.startswith("TRAIN.IMAGES_PER_GPU "))


def test_config_cli_prints_the_error_only():
    proc = subprocess.run([sys.executable, "-m", "bupose.config", "TRAIN.IMAGES_PER_GPU", "0"], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.rstrip().endswith("error: command line: TRAIN.IMAGES_PER_GPU is 0; expected >= 1")


def test_devices(monkeypatch):
    with pytest.raises(ConfigError, match="DEVICE is 'gpu'; expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="DEVICE is 'cuda' but torch sees no CUDA GPU .*use DEVICE cpu, or auto"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"DEVICE is 'cuda:2' but torch sees 2 CUDA GPU\(s\): cuda:0 .. cuda:1"):
        resolve_device("cuda:2")


def test_non_finite_numbers_are_refused():
    with pytest.raises(ConfigError, match=r"TEST.SCALE_FACTOR is \[1.0, inf\]; expected non-empty, each > 0 and "
                                          r"finite numbers"):
        load_config(None, ["TEST.SCALE_FACTOR", "[1, .inf]"])
    assert math.isfinite(load_config(None, ["TEST.KEYPOINT_THRESHOLD", "-1e9"]).TEST.KEYPOINT_THRESHOLD)


def test_sections_given_as_keys(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("TEST:\nTRAIN:\n  LR: 0.01\n")  # an empty section is fine
    assert load_config(path).TRAIN.LR == 0.01
    with pytest.raises(ConfigError, match=r"'TRAIN' is a section, not a key; set its keys \(e.g. 'TRAIN.BEGIN_"):
        load_config(None, ["TRAIN", "3"])
