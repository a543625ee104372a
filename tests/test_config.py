import subprocess
import sys

import pytest

from bupose.config import SCHEMA, closest_key, default_config, load_config, parse_overrides, save_config
from bupose.errors import ConfigError


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_have_type_and_doc():
    cfg = default_config()
    for opt in SCHEMA:
        assert opt.doc and opt.type
        assert cfg.get_key(opt.key) == opt.default
    assert cfg.TRAIN.END_EPOCH == 140 and cfg.TEST.SCALE_FACTOR == [1.0]


def test_file_base_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "DATASET:\n  INPUT_SIZE: 640\nTRAIN:\n  LR: 0.002\n  LR_STEP: [10, 20]\n")
    (tmp_path / "sub").mkdir()
    exp = write(tmp_path / "sub" / "exp.yaml", "_BASE_: ../base.yaml\nTRAIN:\n  LR: 0.005\n  END_EPOCH: 3\n")
    cfg = load_config(exp, ["TRAIN.END_EPOCH", "10", "TEST.FLIP_TEST", "False", "TEST.SCALE_FACTOR", "[0.5,1,2]",
                            "TRAIN.LR", "1e-3"])
    assert cfg.DATASET.INPUT_SIZE == 640  # from the base
    assert cfg.TRAIN.LR_STEP == [10, 20]
    assert cfg.TRAIN.LR == 0.001  # command line beats file beats base
    assert cfg.TRAIN.END_EPOCH == 10 and cfg.TEST.FLIP_TEST is False
    assert cfg.TEST.SCALE_FACTOR == [0.5, 1.0, 2.0] and all(isinstance(s, float) for s in cfg.TEST.SCALE_FACTOR)
    assert cfg.source.endswith("exp.yaml")


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'TRAIN.END_EPOHC'; did you mean 'TRAIN.END_EPOCH'"):
        load_config(None, ["TRAIN.END_EPOHC", "3"])
    exp = write(tmp_path / "e.yaml", "TEST:\n  FLIP_TST: true\n")
    with pytest.raises(ConfigError, match=r"e.yaml: unknown config key 'TEST.FLIP_TST'; did you mean 'TEST.FLIP_TEST'"):
        load_config(exp)
    assert closest_key("DATASET.LR") == "TRAIN.LR"


def test_wrong_type_names_key_type_value(tmp_path):
    with pytest.raises(ConfigError, match=r"TRAIN.END_EPOCH expects int, got 'ten'"):
        load_config(None, ["TRAIN.END_EPOCH", "ten"])
    with pytest.raises(ConfigError, match=r"TEST.FLIP_TEST expects bool, got 3"):
        load_config(None, ["TEST.FLIP_TEST", "3"])
    with pytest.raises(ConfigError, match=r"TEST.SCALE_FACTOR expects list\[float\], got \['a'\]"):
        load_config(None, ["TEST.SCALE_FACTOR", "[a]"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs; 'TRAIN.LR' has no value"):
        load_config(None, ["TRAIN.LR"])
    exp = write(tmp_path / "bad.yaml", "TRAIN: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(exp)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_base_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="_BASE_ cycle"):
        load_config(tmp_path / "a.yaml")


def test_model_spec_deep_merges(tmp_path):
    write(tmp_path / "base.yaml", "MODEL:\n  SPEC:\n    STAGES:\n      NUM_STAGES: 3\n      FUSE: SUM\n")
    exp = write(tmp_path / "e.yaml", "_BASE_: base.yaml\nMODEL:\n  SPEC:\n    STAGES:\n      NUM_STAGES: 4\n")
    assert load_config(exp).MODEL.SPEC == {"STAGES": {"NUM_STAGES": 4, "FUSE": "SUM"}}
    # an empty dict clears (in a file or on the command line), as a merge of nothing would be a no-op
    assert load_config(exp, ["MODEL.SPEC", "{}"]).MODEL.SPEC == {}
    cleared = write(tmp_path / "c.yaml", "_BASE_: base.yaml\nMODEL:\n  SPEC: {}\n")
    assert load_config(cleared).MODEL.SPEC == {}


def test_saved_config_loads_back(tmp_path):
    cfg = load_config(None, ["TRAIN.LR", "0.01", "DATASET.DATASET", "crowdpose"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(path)
    assert again.to_dict() == cfg.to_dict()


def test_override_parsing_keeps_strings():
    assert parse_overrides(["TEST.MODEL_FILE", "out/x.pth", "DEVICE", "cpu"]) == [
        ("TEST.MODEL_FILE", "out/x.pth"), ("DEVICE", "cpu")]


def test_cli_prints_every_key():
    out = subprocess.run([sys.executable, "-m", "bupose.config", "TRAIN.LR", "0.5"], capture_output=True,
                         text=True, check=True).stdout
    assert all(opt.key in out for opt in SCHEMA)
    assert "0.5" in next(line for line in out.splitlines() if line.startswith("TRAIN.LR "))


def test_cli_table_stays_within_120_columns_and_folds_long_values():
    """RTMPose's MODEL.SPEC (about 300 characters) and the long docs are wrapped in their columns, not cut."""
    from pathlib import Path

    cfg_file = Path(__file__).resolve().parents[1] / "experiments/coco/topdown_rtmpose_m_256x192.yaml"
    proc = subprocess.run([sys.executable, "-W", "error", "-m", "bupose.config", "--cfg", str(cfg_file)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""  # no RuntimeWarning from running a package module
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 120
    value, doc = lines[0].index("VALUE"), lines[0].index("DOC")
    start = next(i for i, line in enumerate(lines) if line.startswith("MODEL.SPEC "))
    end = next(i for i in range(start + 1, len(lines)) if lines[i][:1].strip())  # the next key
    folded = "".join(line[value:doc] for line in lines[start:end])
    spec = load_config(str(cfg_file)).MODEL.SPEC
    assert len(repr(spec)) > 200 and end - start > 5
    assert folded.replace(" ", "") == repr(spec).replace(" ", "")
    for opt in SCHEMA:  # every key starts a line: its row, or a line of its own when it is too long for the column
        assert any(line == opt.key or line.startswith(opt.key + " ") for line in lines), opt.key


def test_every_experiment_file_loads_and_the_synthetic_models_run():
    import torch
    from pathlib import Path

    from bupose.methods import build_method

    files = sorted((Path(__file__).resolve().parents[1] / "experiments").rglob("*.yaml"))
    assert any(p.name == "dekr_simple_160.yaml" for p in files)
    for path in files:
        cfg = load_config(str(path))
        if path.parent.name != "synthetic":
            continue
        model = build_method(cfg).build_model().eval()
        # top-down models take MODEL.IMAGE_SIZE crops (SimCC's linear layers need exactly that size)
        w, h = cfg.MODEL.IMAGE_SIZE if cfg.MODEL.NAME.startswith("topdown") else [cfg.DATASET.INPUT_SIZE] * 2
        with torch.no_grad():
            out = model(torch.zeros(1, 3, h, w))
        assert out, path.name
