"""The network of any bupose method to ONNX, the check against PyTorch, and the exported file run by onnxruntime.

Only the network is exported; decoding (peaks, grouping, NMS, multi-scale + flip, the map back to the image) stays
in Python, so an exported model runs through the same test engine as the PyTorch one::

    from bupose.export import OnnxModel
    people = bupose.Predictor(cfg, OnnxModel("model.onnx"))(image_bgr)   # or Predictor(cfg, "model.onnx")

**The file.** One input, ``image``: ``(B, 3, H, W)``, the tensor the method's decoder prepares (``decoder.prepare``;
see :data:`INPUT_DOCS`). The outputs are the model's output dict flattened: a tensor keeps its key (``heatmap``), a
list entry gets its position (``levels.0`` ... ``levels.3`` of YOLO-Pose); :data:`OUTPUT_DOCS` says what each
holds. The file's metadata (``metadata_props``) carries ``bupose.method`` (``MODEL.NAME``), ``bupose.num_keypoints``,
``bupose.dataset``, ``bupose.config`` (the resolved config as JSON), ``bupose.attributes`` (model attributes the
decoders read: YOLO-Pose's ``anchors`` and ``strides``), ``bupose.precision`` and ``bupose.doc`` (the input and
output table). Without ``dynamic`` every dimension is fixed to the sample input's; with it batch, height and width
are free (the top-down crop size stays what the network was built for).

**Deformable and adaptive convolutions** (DEKR's adaptive blocks, AdaptivePose's DCNv2) export through their
``grid_sample`` formulation; a model set to torchvision's ``deform_conv2d`` (which has no ONNX export) is exported
with ``grid_sample`` instead (the same outputs; ``tests/test_layers.py``).

**Exporters.** ``exporter="torchscript"`` (default) is ``torch.onnx.export(..., dynamo=False)``: seconds for the
models here. ``"dynamo"`` is the torch.export-based exporter (needs ``onnxscript``; 10-25x slower to export here,
same outputs).
"""
from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from bupose.errors import BuposeError, ConfigError, DataError

#: the exporters: ``torchscript`` (torch.onnx.export with dynamo=False) or ``dynamo`` (torch.export-based)
EXPORTERS = ("torchscript", "dynamo")
#: the ONNX opset written by default (GridSample needs >= 16)
DEFAULT_OPSET = 17
#: model attributes that decoders read in ``bind(model)``, recorded in the file so that an exported model binds too
DECODER_ATTRIBUTES = ("anchors", "strides")
#: the extra that installs what export needs
INSTALL_HINT = 'pip install -e ".[export]"  (onnx, onnxruntime, onnxscript)'

#: what the input ``image`` holds, per ``MODEL.NAME`` (the tensor ``decoder.prepare`` makes from a BGR image)
INPUT_DOCS = {
    "hrnet_dekr": "RGB, /255 then ImageNet mean/std; the official multi-scale resize: short side DATASET.INPUT_SIZE "
                  "rounded up to a multiple of 64, long side in proportion rounded up to 64, both x scale",
    "yolo_pose": "RGB in [0, 1], letterboxed into a square of DATASET.INPUT_SIZE x scale (a multiple of 64), "
                 "padding 114/255",
    "hrnet_adaptive_pose": "BGR, /255 then CenterNet mean/std; the decoder's test resize (DATASET.INPUT_SIZE x scale)",
    "dla_adaptive_pose": "BGR, /255 then CenterNet mean/std; the decoder's test resize (DATASET.INPUT_SIZE x scale)",
    "topdown": "B person crops of MODEL.IMAGE_SIZE (w, h): the box (1.25 padding, the input's aspect ratio) "
               "warped to the crop, RGB (DATASET.COLOR_RGB) /255 then ImageNet mean/std",
}
#: what each output holds, by output name (h, w: the input's H/4, W/4)
OUTPUT_DOCS = {
    "heatmap": "(B, K+1, h, w) DEKR keypoint heatmaps, the person-centre heatmap last",
    "offset": "(B, 2K, h, w) per-cell (dx, dy) of each keypoint from the cell, output-map pixels",
    "center": "(B, 1, h, w) AdaptivePose person-centre logits (apply a sigmoid)",
    "part_offset": "(B, 2P, h, w) AdaptivePose adaptive points (dx, dy) of the P body parts",
    "levels": "(B, A, H/s, W/s, 5 + classes + 3K) YOLO-Pose raw head outputs of the level of stride s "
              "(8, 16, 32, 64): box, objectness, class, then (x, y, conf) per keypoint (logits / raw offsets)",
    "heatmaps": "(B, K, H/4, W/4) top-down keypoint heatmaps of each crop",
    "simcc_x": "(B, K, W x split ratio) SimCC x-coordinate classification of each crop",
    "simcc_y": "(B, K, H x split ratio) SimCC y-coordinate classification of each crop",
    "coords": "(B, K, 4) RLE: mu (x, y) normalised to the crop, then sigma (x, y)",
}


class ExportError(BuposeError, RuntimeError):
    """A model that cannot be exported, a missing export dependency, or an exported file that cannot be run."""


def require(module: str):
    """Import an export dependency (``onnx``, ``onnxruntime``, ``onnxscript``) or raise ExportError saying how to
    install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{module} is not installed; export needs it: {INSTALL_HINT}") from None


# --- output structure ------------------------------------------------------------------------------------------
def flatten_outputs(outputs: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """A model's outputs as ``[(name, tensor)]``: dict keys and list positions joined by dots (``levels.0``).

    Raises ExportError for anything but tensors in (nested) dicts, lists and tuples."""
    if isinstance(outputs, torch.Tensor):
        return [(prefix or "output", outputs)]
    if isinstance(outputs, dict):
        items = [(str(k), v) for k, v in outputs.items()]
    elif isinstance(outputs, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(outputs)]
    else:
        raise ExportError(f"model output {prefix or '(top level)'!r} is a {type(outputs).__name__}; only tensors in "
                          f"dicts, lists and tuples can be exported")
    flat: list[tuple[str, torch.Tensor]] = []
    for key, value in items:
        if "." in key:
            raise ExportError(f"model output key {key!r} contains a '.', which output names use as the separator")
        flat += flatten_outputs(value, f"{prefix}.{key}" if prefix else key)
    return flat


def unflatten_outputs(named: Sequence[tuple[str, Any]]) -> Any:
    """The inverse of :func:`flatten_outputs` for ``[(name, value)]`` in the flattened order: dotted numeric parts
    become list positions (``levels.0``, ``levels.1`` -> ``{"levels": [v0, v1]}``); a lone ``output`` is returned
    as it is."""
    if len(named) == 1 and named[0][0] == "output":
        return named[0][1]
    root: dict = {}
    for name, value in named:
        parts = name.split(".")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node):
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_lists(node[k]) for k in sorted(node, key=int)]
    return {k: _lists(v) for k, v in node.items()}


class FlatOutputs(nn.Module):
    """``model`` with its outputs flattened to a tuple in :func:`flatten_outputs` order (what ONNX needs)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t for _, t in flatten_outputs(self.model(x)))


# --- sample inputs ---------------------------------------------------------------------------------------------
def sample_inputs(cfg, model: nn.Module, image: np.ndarray | None = None, dynamic: bool = False
                  ) -> list[torch.Tensor]:
    """Network inputs made by the method's own decoder from ``image`` (``(H, W, 3)`` uint8 BGR; default a seeded
    random square of ``DATASET.INPUT_SIZE``): the scale-1 input (bottom-up / one-stage), or the crop of a box around
    the image's central part (top-down). With ``dynamic`` a second input of another shape follows: the image at
    scale 1.25 (bottom-up), or a batch of 3 crops (top-down)."""
    from bupose.methods import build_method

    decoder = build_method(cfg).decoder()
    if image is None:
        size = int(cfg.DATASET.INPUT_SIZE)
        image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    if hasattr(decoder, "bind"):
        decoder.bind(model)
    h, w = image.shape[:2]
    if getattr(decoder, "needs_boxes", False):
        box = np.array([[0.2 * w, 0.1 * h, 0.6 * w, 0.8 * h]])
        decoder.begin(image, [1.0], boxes=(box, np.ones(1)))
        inputs = [decoder.prepare(image, 1.0).tensor]
        if dynamic:
            boxes = np.concatenate([box, [[0.0, 0.0, 0.5 * w, 0.5 * h], [0.4 * w, 0.3 * h, 0.5 * w, 0.7 * h]]])
            decoder.begin(image, [1.0], boxes=(boxes, np.ones(3)))
            inputs.append(decoder.prepare(image, 1.0).tensor)
        return inputs
    decoder.begin(image, [1.0, 1.25] if dynamic else [1.0])
    inputs = [decoder.prepare(image, 1.0).tensor]
    if dynamic:
        inputs.append(decoder.prepare(image, 1.25).tensor)
    return inputs


# --- export ----------------------------------------------------------------------------------------------------
@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote: ``path``; ``input_shape`` of the sample (fixed unless ``dynamic``);
    ``outputs``: ``[(name, sample shape)]``; ``notes``: what was changed to make the model export."""

    path: Path
    input_shape: tuple[int, ...]
    outputs: list[tuple[str, tuple[int, ...]]]
    dynamic: bool
    half: bool
    exporter: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    doc: str = ""


def exportable_copy(model: nn.Module, half: bool = False) -> tuple[nn.Module, list[str]]:
    """A CPU, eval-mode deep copy of ``model`` ready for export (float16 when ``half``) and notes on what changed:
    adaptive / deformable convolutions set to torchvision's ``deform_conv2d`` switch to ``grid_sample``."""
    from bupose.models.layers import AdaptiveConv2d, ModulatedDeformConv2d

    net = copy.deepcopy(model).cpu().eval()
    notes = []
    switched = [m for m in net.modules()
                if isinstance(m, (AdaptiveConv2d, ModulatedDeformConv2d)) and m.impl != "grid_sample"]
    for m in switched:
        m.impl = "grid_sample"
    if switched:
        notes.append(f"{len(switched)} adaptive/deformable convolution(s) set to deform_conv2d (MODEL.ADAPTIVE_CONV) "
                     f"exported with the grid_sample formulation: torchvision's deform_conv2d has no ONNX export; "
                     f"the outputs are the same")
    return (net.half() if half else net), notes


def model_attributes(model: nn.Module) -> dict[str, Any]:
    """The :data:`DECODER_ATTRIBUTES` that ``model`` has, as JSON-ready lists."""
    model = getattr(model, "module", model)
    found = {}
    for name in DECODER_ATTRIBUTES:
        value = getattr(model, name, None)
        if isinstance(value, torch.Tensor):
            found[name] = value.detach().float().cpu().tolist()
        elif isinstance(value, (list, tuple)):
            found[name] = [float(v) if isinstance(v, float) else int(v) for v in value]
    return found


def _method_label(cfg) -> str:
    from bupose.methods import method_label

    return method_label(cfg.MODEL.NAME)


def export_onnx(model: nn.Module, path: str | Path, *, cfg, sample: torch.Tensor, dynamic: bool = False,
                half: bool = False, opset: int = DEFAULT_OPSET, exporter: str = "torchscript") -> OnnxExport:
    """Export ``model``'s network to ``path`` (ONNX), with bupose's metadata (see the module docstring).

    Args:
        model: the method's model (not changed; a copy is exported on the CPU).
        cfg: its config (method, keypoints and the config stored in the file).
        sample: a ``(B, 3, H, W)`` float32 network input (:func:`sample_inputs`); it fixes the shapes unless
            ``dynamic``.
        dynamic: free batch, height and width.
        half: float16 weights, input and outputs.
        opset: the ONNX opset (>= 16 for GridSample).
        exporter: one of :data:`EXPORTERS`.
    Raises:
        ExportError: a missing dependency, an unknown exporter, or a model that torch cannot export (the message
        names the method and torch's reason).
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if opset < 16:
        raise ExportError(f"opset {opset} has no GridSample (adaptive and deformable convolutions): use >= 16")
    onnx = require("onnx")
    if exporter == "dynamo":
        require("onnxscript")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net, notes = exportable_copy(model, half)
    x = sample.detach().cpu().to(torch.float16 if half else torch.float32)
    with torch.no_grad():
        flat = flatten_outputs(net(x))
    names = [n for n, _ in flat]
    wrapper = FlatOutputs(net).eval()
    t0 = time.perf_counter()
    try:
        _run_exporter(wrapper, x, path, names, dynamic, opset, exporter)
    except ExportError:
        raise
    except Exception as e:  # torch's exporters raise many types; the reason is what matters
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{_method_label(cfg)} cannot be exported to ONNX with the {exporter} exporter: "
                          f"{type(e).__name__}: {reason}") from e
    seconds = time.perf_counter() - t0
    shapes = [(n, tuple(t.shape)) for n, t in flat]
    doc = describe_io(cfg.MODEL.NAME, tuple(x.shape), shapes, dynamic, half)
    meta = {"bupose.method": cfg.MODEL.NAME, "bupose.num_keypoints": str(cfg.DATASET.NUM_JOINTS),
            "bupose.dataset": cfg.DATASET.DATASET, "bupose.config": json.dumps(cfg, default=str),
            "bupose.attributes": json.dumps(model_attributes(model)),
            "bupose.precision": "float16" if half else "float32", "bupose.doc": doc}
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))
    return OnnxExport(path=path, input_shape=tuple(x.shape), outputs=shapes, dynamic=dynamic, half=half,
                      exporter=exporter, seconds=seconds, notes=notes, doc=doc)


def _run_exporter(wrapper: nn.Module, x: torch.Tensor, path: Path, names: list[str], dynamic: bool, opset: int,
                  exporter: str) -> None:
    axes = None
    if dynamic:
        axes = {"image": {0: "batch", 2: "height", 3: "width"}}
        axes.update({n: {0: "batch"} for n in names})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torchscript exporter's deprecation notice, tracer warnings
        if exporter == "torchscript":
            torch.onnx.export(wrapper, (x,), str(path), opset_version=opset, input_names=["image"],
                              output_names=names, dynamic_axes=axes, dynamo=False)
        else:
            if dynamic and x.shape[0] == 1:  # torch.export fixes a dimension of size 1: trace with a batch of 2
                x = torch.cat([x, x])
            program = torch.onnx.export(wrapper, (x,), None, opset_version=max(opset, 18), input_names=["image"],
                                        output_names=names, dynamic_axes=axes, dynamo=True, verbose=False)
            program.save(str(path))


def describe_io(method_name: str, input_shape: Sequence[int], outputs: Sequence[tuple[str, Sequence[int]]],
                dynamic: bool, half: bool) -> str:
    """The exported file's inputs and outputs as a text table (also stored in its ``bupose.doc`` metadata)."""
    dtype = "float16" if half else "float32"
    free = "free batch, height and width" if dynamic else "fixed shapes"
    key = "topdown" if method_name.startswith("topdown") else method_name
    lines = [f"input  image {list(input_shape)} {dtype} ({free}): {INPUT_DOCS.get(key, 'the decoder input')}"]
    described = set()
    for name, shape in outputs:
        base = name.split(".")[0]
        doc = OUTPUT_DOCS.get(base, "") if base not in described else f"as {base}.0"
        described.add(base)
        lines.append(f"output {name} {list(shape)} {dtype}: {doc}")
    return "\n".join(lines)


# --- comparison with PyTorch -----------------------------------------------------------------------------------
@dataclass
class OutputCheck:
    """One output of one input: ``max_abs`` difference ONNX Runtime vs PyTorch (float32), the ``tolerance``
    (relative to the output's largest magnitude, at least 1), and whether it is within."""

    input_shape: tuple[int, ...]
    name: str
    max_abs: float
    tolerance: float
    ok: bool


def tolerance_for(reference: torch.Tensor, half: bool) -> float:
    """The allowed max difference: 1e-4 (float32) or 2e-2 (float16) times ``max(1, max |reference|)``."""
    scale = max(1.0, float(reference.abs().max())) if reference.numel() else 1.0
    return (2e-2 if half else 1e-4) * scale


def compare_with_onnxruntime(path: str | Path, model: nn.Module, inputs: Sequence[torch.Tensor]
                             ) -> list[OutputCheck]:
    """Run the exported file (onnxruntime, CPU) and ``model`` (PyTorch, float32, its own device and impl) on each of
    ``inputs`` and compare every output; the tolerance of :func:`tolerance_for` (float16 files: the looser one)."""
    onnx_model = OnnxModel(path)
    device = next(model.parameters()).device
    model = model.eval()
    checks = []
    for x in inputs:
        with torch.no_grad():
            ref = flatten_outputs(model(x.to(device).float()))
        got = flatten_outputs(onnx_model(x.float()))
        if [n for n, _ in ref] != [n for n, _ in got]:
            raise ExportError(f"{path}: outputs {[n for n, _ in got]} differ from the model's {[n for n, _ in ref]}")
        for (name, r), (_, g) in zip(ref, got):
            r = r.detach().float().cpu()
            if tuple(r.shape) != tuple(g.shape):
                raise ExportError(f"{path}: output {name} has shape {tuple(g.shape)} in onnxruntime, "
                                  f"{tuple(r.shape)} in PyTorch")
            diff = float((g.cpu() - r).abs().max()) if r.numel() else 0.0
            tol = tolerance_for(r, onnx_model.half)
            checks.append(OutputCheck(tuple(x.shape), name, diff, tol, math.isfinite(diff) and diff <= tol))
    return checks


# --- running an exported file ----------------------------------------------------------------------------------
class OnnxModel:
    """An exported bupose network run by onnxruntime, usable where the PyTorch model is (``bupose.Predictor``, the
    test engine): ``model(x)`` with ``x`` ``(B, 3, H, W)`` returns the model's nested output dict as float32 torch
    tensors on ``x``'s device.

    A file exported with fixed shapes runs a larger batch in pieces of its batch size; another height or width is a
    DataError asking for a ``--dynamic`` export. The decoder attributes stored in the file (YOLO-Pose's ``anchors``,
    ``strides``) are attributes of this object, so ``decoder.bind(model)`` works as with the PyTorch model.

    Args:
        path: the ``.onnx`` file written by :func:`export_onnx` (``tools/export.py``).
        providers: onnxruntime execution providers (default: CPU).
        threads: onnxruntime's intra-op threads (None: as many as torch uses, ``torch.get_num_threads()``, so that
            ``OMP_NUM_THREADS`` / ``torch.set_num_threads`` govern both back ends alike).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None):
        ort = require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"ONNX model not found: {self.path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as e:  # onnxruntime's own exception types
            raise DataError(f"{self.path}: onnxruntime cannot load it ({str(e).strip().splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "bupose.method" not in meta:
            raise DataError(f"{self.path}: not a bupose export (no bupose.method metadata); export it with "
                            f"tools/export.py")
        self.method_name = meta["bupose.method"]
        self.num_keypoints = int(meta.get("bupose.num_keypoints", "0"))
        self.dataset = meta.get("bupose.dataset", "")
        self.doc = meta.get("bupose.doc", "")
        self.half = meta.get("bupose.precision") == "float16"
        for name, value in json.loads(meta.get("bupose.attributes", "{}")).items():
            setattr(self, name, torch.tensor(value) if name == "anchors" else value)
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, list(inp.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def check_config(self, cfg) -> None:
        """ConfigError unless ``cfg`` is the method and keypoint count the file was exported for."""
        if cfg.MODEL.NAME != self.method_name or int(cfg.DATASET.NUM_JOINTS) != self.num_keypoints:
            raise ConfigError(f"{self.path} was exported from {self.method_name} with {self.num_keypoints} keypoints "
                              f"({self.dataset}); the config {cfg.source or ''} is {cfg.MODEL.NAME} with "
                              f"{cfg.DATASET.NUM_JOINTS} keypoints")

    def __call__(self, x: torch.Tensor):
        fixed = [d if isinstance(d, int) else None for d in self.input_shape]
        if any(f is not None and f != s for f, s in zip(fixed[1:], x.shape[1:])):
            raise DataError(f"{self.path} was exported for {self.input_shape} inputs; this pass needs "
                            f"{list(x.shape)} (another image size or test scale): export with --dynamic")
        arr = x.detach().cpu().numpy().astype(np.float16 if self.half else np.float32)
        batch = fixed[0] or arr.shape[0]
        if arr.shape[0] % batch:
            raise DataError(f"{self.path} was exported for batches of {batch}; got {arr.shape[0]}: export with "
                            f"--dynamic")
        parts = [self.session.run(None, {self.input_name: arr[i:i + batch]}) for i in range(0, arr.shape[0], batch)]
        outs = [np.concatenate([p[j] for p in parts]) if len(parts) > 1 else parts[0][j]
                for j in range(len(self.output_names))]
        tensors = [torch.from_numpy(np.ascontiguousarray(o, dtype=np.float32)).to(x.device) for o in outs]
        return unflatten_outputs(list(zip(self.output_names, tensors)))

    def to(self, device) -> "OnnxModel":
        """No-op (onnxruntime runs on its providers); outputs follow the input's device."""
        return self

    def eval(self) -> "OnnxModel":
        return self

