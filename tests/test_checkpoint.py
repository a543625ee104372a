"""The checkpoint hook (bupose.methods): the engine knows no method; models declare their method and converter, method
classes their official key layouts and pickled-file readers; a checkpoint of one method is refused by another's."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import bupose.methods as methods
from bupose.engine.checkpoint import load_checkpoint, official_method_of, read_checkpoint
from bupose.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
TINY_STAGES = {"NUM_STAGES": 3, "NUM_MODULES": [1, 1, 1], "NUM_BRANCHES": [2, 3, 4], "BLOCK": ["BASIC"] * 3,
               "NUM_BLOCKS": [[1, 1], [1, 1, 1], [1, 1, 1, 1]], "NUM_CHANNELS": [[4, 8], [4, 8, 16], [4, 8, 16, 32]],
               "FUSE_METHOD": ["SUM"] * 3}
TINY_DEKR = {"FINAL_CONV_KERNEL": 1, "STEM_BLOCKS": 1, "STAGES": TINY_STAGES,
             "HEAD_HEATMAP": {"BLOCK": "BASIC", "NUM_BLOCKS": 1, "NUM_CHANNELS": 8, "DILATION_RATE": 1},
             "HEAD_OFFSET": {"BLOCK": "ADAPTIVE", "NUM_BLOCKS": 1, "NUM_CHANNELS_PERKPT": 4, "DILATION_RATE": 1}}


def _meta(shapes) -> dict[str, torch.Tensor]:
    """A state_dict of meta tensors (keys and shapes only) from ``{key: shape}`` or ``[(key, shape), ...]``."""
    items = shapes.items() if isinstance(shapes, dict) else shapes
    return {k: torch.empty(v, device="meta") for k, v in items}


def _official_layouts() -> dict[str, dict[str, torch.Tensor]]:
    """MODEL.NAME -> the key layout of a full-size official checkpoint of that method (meta tensors)."""
    def shapes(name):
        return json.loads((FIXTURES / name).read_text())

    return {"hrnet_dekr": _meta(shapes("dekr_w32_official_keys.json")["shapes"]),
            "yolo_pose": _meta(shapes("yolo_pose_official_keys.json")["s6"]["state_dict"]),
            "hrnet_adaptive_pose": _meta(shapes("adaptive_pose_w32_coco_official_keys.json")["shapes"]),
            "dla_adaptive_pose": _meta(shapes("adaptive_pose_dla34_coco_official_keys.json")["shapes"])}


@pytest.fixture(scope="module")
def dekr():
    from bupose.methods.dekr.model import build_dekr

    torch.manual_seed(0)
    return build_dekr(TINY_DEKR, 14)


@pytest.fixture(scope="module")
def yolo():
    from bupose.methods.yolo_pose.model import YOLOPose

    torch.manual_seed(0)
    return YOLOPose(width_multiple=0.02, depth_multiple=0.33)


# --- the hook ------------------------------------------------------------------------------------------------------
def test_every_model_class_declares_its_method_at_class_level():
    from bupose.methods.adaptive_pose.model import AdaptivePose, DLAAdaptivePose
    from bupose.methods.dekr.model import DEKR
    from bupose.methods.yolo_pose.model import YOLOPose

    for cls, name in ((DEKR, "hrnet_dekr"), (YOLOPose, "yolo_pose"), (AdaptivePose, "hrnet_adaptive_pose"),
                      (DLAAdaptivePose, "dla_adaptive_pose")):
        assert cls.method_name == name and methods.method_class(name).name == name
        assert callable(getattr(cls, "convert_checkpoint", None)), cls
    for name in ("hrnet_dekr", "yolo_pose", "hrnet_adaptive_pose", "dla_adaptive_pose"):  # official layouts known
        assert methods.method_class(name).official_keys, name


def test_a_model_converts_its_own_checkpoint_without_attachments(dekr, yolo):
    for model in (dekr, yolo):
        assert "convert_checkpoint" not in vars(model) and "method_name" not in vars(model)
        sd = model.state_dict()
        out = model.convert_checkpoint({"model": sd, "method": model.method_name})
        assert out.keys() == sd.keys() and all(torch.equal(out[k], sd[k]) for k in sd)


def test_official_layouts_are_recognised_by_their_method():
    layouts = _official_layouts()
    for name, sd in layouts.items():
        assert official_method_of(sd) == name
        assert official_method_of({"state_dict": {f"module.{k}": v for k, v in sd.items()}}) == name
    assert official_method_of({"conv1.weight": torch.zeros(1)}) is None
    assert official_method_of([1, 2]) is None and official_method_of({1: torch.zeros(1)}) is None
    assert methods.method_label("hrnet_dekr") == "DEKR (hrnet_dekr)" and methods.method_label("x") == "x"


# --- refusals ------------------------------------------------------------------------------------------------------
def test_a_bupose_checkpoint_of_another_method_is_refused_naming_both(dekr, yolo, tmp_path):
    path = tmp_path / "yolo.pth"
    torch.save({"model": yolo.state_dict(), "method": "yolo_pose", "epoch": 1}, path)
    with pytest.raises(CheckpointError, match=f"{path}".replace("\\", "\\\\") + " is a 'yolo_pose' checkpoint; "
                                              "the model is 'hrnet_dekr'"):
        load_checkpoint(dekr, path)
    with pytest.raises(CheckpointError, match="is a 'hrnet_dekr' checkpoint; the model is 'yolo_pose'"):
        load_checkpoint(yolo, {"model": dekr.state_dict(), "method": "hrnet_dekr"})


def test_an_official_checkpoint_of_another_method_is_refused_naming_both(dekr, yolo):
    layouts = _official_layouts()
    with pytest.raises(CheckpointError, match=r"official DEKR \(hrnet_dekr\) checkpoint; the model is 'yolo_pose'"):
        load_checkpoint(yolo, layouts["hrnet_dekr"])
    with pytest.raises(CheckpointError, match=r"official YOLO-Pose \(yolo_pose\) checkpoint; the model is "
                                              r"'hrnet_dekr': not a DEKR \(hrnet_dekr\) checkpoint"):
        load_checkpoint(dekr, {"epoch": 3, "model": layouts["yolo_pose"], "ema": None})
    with pytest.raises(CheckpointError, match=r"official AdaptivePose on DLA-34 \(dla_adaptive_pose\) checkpoint; "
                                              r"the model is 'hrnet_dekr'"):
        load_checkpoint(dekr, {"epoch": 140, "state_dict": layouts["dla_adaptive_pose"]})
    # one's own official checkpoint that does not fit keeps the converter's message alone
    from bupose.methods.dekr.model import build_dekr

    wider = build_dekr({**TINY_DEKR, "STAGES": {**TINY_STAGES, "NUM_CHANNELS": [[8, 16], [8, 16, 32],
                                                                                    [8, 16, 32, 64]]}}, 14)
    with pytest.raises(CheckpointError, match=r"^checkpoint: backbone is HRNet-W4 in the checkpoint, the model is "
                                              r"HRNet-W8"):
        load_checkpoint(wider, dekr.state_dict())


class _NoHook(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)


class _NameOnly(_NoHook):
    method_name = "hrnet_dekr"


def test_a_model_class_without_the_hook_is_refused_clearly():
    sd = _NoHook().state_dict()
    with pytest.raises(CheckpointError, match=r"_NoHook has no checkpoint hook: it lacks a class attribute "
                                              r"method_name and a method convert_checkpoint\(checkpoint\) -> "
                                              r"state_dict \(see bupose.methods\); cannot check checkpoint"):
        load_checkpoint(_NoHook(), sd)
    with pytest.raises(CheckpointError, match=r"_NameOnly has no checkpoint hook: it lacks a method "
                                              r"convert_checkpoint"):
        load_checkpoint(nn.DataParallel(_NameOnly()), sd)


# --- pickled files go through the methods' readers -----------------------------------------------------------------
class _Pickled:
    """A class that torch.load(weights_only=True) refuses."""

    value = 1


def test_pickled_files_are_read_by_the_readers_the_methods_declare(tmp_path, monkeypatch):
    path = tmp_path / "pickled.pt"
    torch.save({"x": _Pickled()}, path)
    readers = dict(methods.pickled_checkpoint_readers())
    assert "yolo_pose" in readers and "hrnet_dekr" not in readers  # YOLO-Pose reads its official pickles
    with pytest.raises(CheckpointError, match="refusing to load the global .*_Pickled"):
        read_checkpoint(path)  # the YOLO-Pose reader refuses classes outside its allow-list

    def refuse(p):
        raise CheckpointError(f"cannot read checkpoint {p}: refused")

    monkeypatch.setattr(methods, "pickled_checkpoint_readers", lambda: [])
    with pytest.raises(CheckpointError, match=r"pickled.pt: it pickles the global \S*_Pickled, .*no "
                                              r"method reads pickled classes$"):
        read_checkpoint(path)
    monkeypatch.setattr(methods, "pickled_checkpoint_readers", lambda: [("a", refuse), ("b", lambda p: {"ok": 1})])
    assert read_checkpoint(path) == {"ok": 1}
    monkeypatch.setattr(methods, "pickled_checkpoint_readers", lambda: [("a", refuse), ("b", refuse)])
    with pytest.raises(CheckpointError, match="no method's reader accepts it: a: cannot read .*; b: cannot read"):
        read_checkpoint(path)


def test_the_engine_imports_no_method_module(tmp_path):
    """Importing the checkpoint engine, reading a plain file and loading it into a model that declares the hook
    loads no module of bupose.methods (a fresh interpreter)."""
    script = textwrap.dedent(f"""
        import sys
        import torch
        import bupose.engine.checkpoint as ck

        class Net(torch.nn.Module):
            method_name = "net"

            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(2, 2)

            def convert_checkpoint(self, checkpoint):
                return ck.plain_state_dict(checkpoint)

        path = {str(tmp_path / "net.pth")!r}
        ck.save_checkpoint({{"model": Net().state_dict(), "method": "net"}}, path)
        ck.load_checkpoint(Net(), path)
        ck.load_checkpoint(Net(), ck.read_checkpoint(path)["model"])
        print(sorted(m for m in sys.modules if m == "bupose.methods" or m.startswith("bupose.methods.")))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_no_converter_imports_another_methods_converter():
    """A converter imports shared helpers (bupose.engine.checkpoint, bupose.methods), never another method."""
    for path in sorted((REPO / "bupose" / "methods").glob("*/convert.py")):
        own = path.parent.name
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("from", "import") and words[1].startswith("bupose.methods."):
                assert words[1].split(".")[2] == own, f"{path}: {line.strip()}"
