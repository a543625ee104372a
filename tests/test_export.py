"""bupose.export and tools/export.py: the networks of the synthetic configs exported to ONNX, onnxruntime's outputs
equal to PyTorch's, and the exported file run by bupose.Predictor giving the same people."""
import importlib.util
import sys

import cv2
import numpy as np
import pytest
import torch

import bupose
from bupose.errors import ConfigError, DataError
from bupose.export import (ExportError, OnnxModel, compare_with_onnxruntime, export_onnx, flatten_outputs,
                           sample_inputs, unflatten_outputs)

from conftest import REPO

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_thread")

#: one small config per family (the brief's DEKR, YOLO-Pose, AdaptivePose and top-down configs)
CONFIGS = {"dekr": "dekr_simple_160", "yolo_pose": "yolo_pose_simple_192", "adaptive_pose": "adaptive_pose_simple_160",
           "topdown": "topdown_hrnet_simple_128x96"}


def _cfg(name: str, *overrides):
    return bupose.load_config(REPO / "experiments" / "synthetic" / f"{CONFIGS[name]}.yaml",
                              ["DEVICE", "cpu", *map(str, overrides)])


def _model(cfg, seed: int = 0):
    torch.manual_seed(seed)
    return bupose.build_model(cfg).eval()


def _image(seed: int = 0, shape=(150, 190)) -> np.ndarray:
    """A smooth random image (blobs, so that random networks give varied maps)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (shape[0] // 10, shape[1] // 10, 3), dtype=np.uint8)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (cfg, model, path, OnnxExport, sample inputs): every family exported once, dynamic, float32."""
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in CONFIGS:
        cfg = _cfg(name)
        model = _model(cfg)
        inputs = sample_inputs(cfg, model, _image(), dynamic=True)
        result = export_onnx(model, folder / f"{name}.onnx", cfg=cfg, sample=inputs[0], dynamic=True)
        out[name] = (cfg, model, folder / f"{name}.onnx", result, inputs)
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnxruntime_outputs_equal_pytorch(exported, name):
    cfg, model, path, result, inputs = exported[name]
    assert path.is_file() and result.dynamic and not result.half
    checks = compare_with_onnxruntime(path, model, inputs)
    assert len({c.input_shape for c in checks}) == 2, "the sample and an input of another shape"
    assert all(c.ok for c in checks), checks
    assert max(c.max_abs for c in checks) < 1e-3
    # the file documents itself: method, keypoints, the input/output table, the config
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["bupose.method"] == cfg.MODEL.NAME and meta["bupose.num_keypoints"] == "14"
    assert "input  image" in meta["bupose.doc"] and all(n in meta["bupose.doc"] for n, _ in result.outputs)
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == [n for n, _ in result.outputs]


def test_output_names_per_family(exported):
    names = {k: [n for n, _ in v[3].outputs] for k, v in exported.items()}
    assert names == {"dekr": ["heatmap", "offset"], "yolo_pose": ["levels.0", "levels.1", "levels.2", "levels.3"],
                     "adaptive_pose": ["center", "offset", "part_offset"], "topdown": ["heatmaps"]}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_predictor_on_the_exported_file_finds_the_same_people(exported, name):
    cfg, model, path, _, _ = exported[name]
    image = _image(1, (170, 210))
    boxes = (np.array([[20.0, 10, 80, 150], [100, 30, 90, 130]]), np.array([0.9, 0.7])) if name == "topdown" else None
    ours = bupose.Predictor(cfg, model).people(image, boxes=boxes)
    theirs = bupose.Predictor(cfg, str(path)).people(image, boxes=boxes)  # a path: run through onnxruntime
    assert len(ours) == len(theirs) > 0
    np.testing.assert_allclose(theirs.keypoints[..., :2], ours.keypoints[..., :2], atol=1e-3)
    np.testing.assert_allclose(theirs.scores, ours.scores, atol=1e-5)
    np.testing.assert_allclose(theirs.keypoints[..., 2], ours.keypoints[..., 2], atol=1e-5)


def test_onnx_model_checks_the_config_and_shapes(exported, tmp_path):
    _, _, path, _, _ = exported["dekr"]
    with pytest.raises(ConfigError, match="exported from hrnet_dekr with 14 keypoints"):
        bupose.Predictor(_cfg("yolo_pose"), str(path))
    # a fixed-shape export (here one top-down crop) runs a batch in pieces, and says what to do for another size
    cfg, model, _, _, inputs = exported["topdown"]
    static = tmp_path / "static.onnx"
    export_onnx(model, static, cfg=cfg, sample=inputs[0])
    runner = OnnxModel(static)
    assert runner.input_shape == [1, 3, 128, 96]
    with torch.no_grad():
        ref = model(inputs[1])
    assert (runner(inputs[1])["heatmaps"] - ref["heatmaps"]).abs().max() < 1e-4  # 3 crops, one at a time
    with pytest.raises(DataError, match=r"exported for \[1, 3, 128, 96\] inputs; this pass needs \[1, 3, 64, 48\].*"
                                        r"export with --dynamic"):
        runner(torch.zeros(1, 3, 64, 48))
    with pytest.raises(DataError, match="ONNX model not found"):
        OnnxModel(tmp_path / "missing.onnx")
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 4, 4),), str(plain), dynamo=False)
    with pytest.raises(DataError, match="not a bupose export"):
        OnnxModel(plain)


def test_yolo_pose_anchors_travel_in_the_file(exported):
    _, model, path, _, _ = exported["yolo_pose"]
    runner = OnnxModel(path)
    assert torch.equal(runner.anchors, model.anchors.float()) and list(runner.strides) == list(model.strides)


@pytest.mark.slow
def test_deform_conv2d_models_export_through_grid_sample(tmp_path):
    cfg = _cfg("dekr", "MODEL.ADAPTIVE_CONV", "deform_conv2d")
    model = _model(cfg)
    x = sample_inputs(cfg, model, _image())[0]
    result = export_onnx(model, tmp_path / "d.onnx", cfg=cfg, sample=x)
    assert any("grid_sample" in n and "deform_conv2d" in n for n in result.notes)
    assert any(n.op_type == "GridSample" for n in onnx.load(str(tmp_path / "d.onnx")).graph.node)
    assert all(m.impl == "deform_conv2d" for m in model.modules() if hasattr(m, "impl")), "the model is unchanged"
    assert all(c.ok for c in compare_with_onnxruntime(tmp_path / "d.onnx", model, [x]))


def test_what_cannot_be_exported_is_a_clear_error(tmp_path):
    cfg = _cfg("topdown")
    model = _model(cfg)
    x = torch.zeros(1, 3, 128, 96)
    with pytest.raises(ExportError, match="opset 15 has no GridSample"):
        export_onnx(model, tmp_path / "a.onnx", cfg=cfg, sample=x, opset=15)
    with pytest.raises(ExportError, match="exporter must be one of"):
        export_onnx(model, tmp_path / "a.onnx", cfg=cfg, sample=x, exporter="tflite")

    class Odd(torch.nn.Module):
        def forward(self, x):
            return {"maps": x, "meta": "text"}

    with pytest.raises(ExportError, match="'meta' is a str; only tensors"):
        export_onnx(Odd(), tmp_path / "b.onnx", cfg=cfg, sample=x)

    class NoOnnxOp(torch.nn.Module):
        def forward(self, x):
            return {"maps": torch.cummax(x, 1)[0]}  # an operator ONNX does not have

    with pytest.raises(ExportError, match=r"top-down HRNet \(topdown_hrnet\) cannot be exported to ONNX with the "
                                          r"torchscript exporter: .*'aten::cummax' to ONNX opset version 17 is not "
                                          r"supported"):
        export_onnx(NoOnnxOp(), tmp_path / "c.onnx", cfg=cfg, sample=x)


def test_flatten_and_unflatten_outputs():
    t = [torch.zeros(1) + i for i in range(4)]
    nested = {"heatmap": t[0], "levels": [t[1], t[2]], "extra": {"a": t[3]}}
    flat = flatten_outputs(nested)
    assert [n for n, _ in flat] == ["heatmap", "levels.0", "levels.1", "extra.a"]
    back = unflatten_outputs(flat)
    assert back.keys() == nested.keys() and back["levels"][1] is t[2] and back["extra"]["a"] is t[3]
    assert unflatten_outputs(flatten_outputs(t[0])) is t[0]
    with pytest.raises(ExportError, match="contains a '.'"):
        flatten_outputs({"a.b": t[0]})


def _export_tool():
    spec = importlib.util.spec_from_file_location("bupose_tool_export", REPO / "tools" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_tool_writes_checks_and_documents(tmp_path, capsys):
    from bupose.engine.checkpoint import save_checkpoint

    cfg = _cfg("topdown")
    weights = save_checkpoint({"model": _model(cfg).state_dict(), "method": cfg.MODEL.NAME}, tmp_path / "w.pth")
    cfg_file = REPO / "experiments" / "synthetic" / "topdown_hrnet_simple_128x96.yaml"
    assert _export_tool().main(["--cfg", str(cfg_file), "TEST.MODEL_FILE", str(weights), "--dynamic"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "w.onnx").is_file(), out
    for text in ("[1/4]", "[4/4]", "input  image [1, 3, 128, 96] float32 (free batch, height and width)",
                 "output heatmaps [1, 14, 32, 24]", "max |difference|", "(tolerance", "done in"):
        assert text in out, out
    assert out.count(" ok") == 2  # the sample and a batch of 3 crops
    # bad input: a clear one-line error, exit code 2
    assert _export_tool().main(["--cfg", str(cfg_file), "TEST.MODEL_FILE", str(tmp_path / "none.pth")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dekr", "adaptive_pose"])
def test_half_precision_export(name, tmp_path):
    cfg = _cfg(name)
    model = _model(cfg)
    inputs = sample_inputs(cfg, model, _image(), dynamic=True)
    result = export_onnx(model, tmp_path / "h.onnx", cfg=cfg, sample=inputs[0], dynamic=True, half=True)
    assert result.half and "float16" in result.doc
    runner = OnnxModel(tmp_path / "h.onnx")
    assert runner.half and runner.session.get_inputs()[0].type == "tensor(float16)"
    checks = compare_with_onnxruntime(tmp_path / "h.onnx", model, inputs)
    assert all(c.ok for c in checks), checks
    assert next(model.parameters()).dtype == torch.float32, "the model itself stays float32"


@pytest.mark.slow
def test_dynamo_exporter(tmp_path):
    pytest.importorskip("onnxscript")
    cfg = _cfg("topdown")
    model = _model(cfg)
    inputs = sample_inputs(cfg, model, _image(), dynamic=True)
    export_onnx(model, tmp_path / "d.onnx", cfg=cfg, sample=inputs[0], dynamic=True, exporter="dynamo")
    assert all(c.ok for c in compare_with_onnxruntime(tmp_path / "d.onnx", model, inputs))


def test_missing_onnx_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now fails as if it were not installed
    cfg = _cfg("topdown")
    with pytest.raises(ExportError, match=r'onnx is not installed; export needs it: pip install -e "\.\[export\]"'):
        export_onnx(_model(cfg), tmp_path / "x.onnx", cfg=cfg, sample=torch.zeros(1, 3, 128, 96))
