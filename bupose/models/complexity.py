"""Model size and cost: parameters and multiply-accumulates (MACs) of one forward pass.

Counted per output element, for one image:

* ``Conv2d`` (and 1d / 3d): ``in_channels / groups * prod(kernel_size)`` MACs, plus 1 for the bias if it has one;
* ``ConvTranspose2d`` (and 1d / 3d): ``out_channels / groups * prod(kernel_size)`` MACs per *input* element (each
  input value is spread over a kernel-sized patch of every output channel), plus 1 per output element for the
  bias;
* ``Linear``: ``in_features`` MACs, plus 1 for the bias;
* batch norm: 1 MAC (a scale-and-shift; folded into the convolution before it, it becomes that conv's bias, so a
  model counts the same before and after folding);
* products of two activations (attention's ``q k^T`` and ``attn v``): what the module that computes them declares
  in a method ``matmul_macs(inputs, output) -> int`` (per forward call, added to its Conv / Linear children's);
* everything else (activations, pooling, resampling, additions, concatenations, layer norm): nothing.

This convention reproduces the GMACS column of the official YOLO-Pose README (TexasInstruments/edgeai-yolov5,
branch ``yolo-pose``) for the released non-lite models (depthwise keypoint head) within 0.07 GMACs: s6 at 640:
10.13 (README 10.2), s6 at 960: 22.80 (22.8), m6 at 960: 66.29 (66.3), l6 at 960: 145.55 (145.6); and the ti_lite
ones (1x1 keypoint conv) within 0.11: s6 at 640: 8.60 (8.6), s6 at 960: 19.35 (19.3), m6 at 960: 58.59 (58.7).
(The README's figures are not mutually consistent under any one convention: 640 and 960 differ by exactly 2.25x
in every count, yet 10.2 x 2.25 = 22.95, not 22.8.)

Counting runs the model once on a zero input of the model's device and dtype; build the model under
``with torch.device("meta"):`` to count a large model without computing anything.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _module_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return inputs[0].numel() * per_input + (output.numel() if module.bias is not None else 0)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return output.numel() * (per_output + (module.bias is not None))
    if isinstance(module, nn.Linear):
        return output.numel() * (module.in_features + (module.bias is not None))
    if isinstance(module, _NORMS):
        return output.numel()
    return 0


def count_params_macs(model: nn.Module, input_size: int | Sequence[int] = (640, 640),
                      in_channels: int = 3) -> tuple[int, int]:
    """``(parameters, MACs)`` of ``model`` on one ``(1, in_channels, height, width)`` input, ``input_size`` =
    ``(height, width)`` or one int for a square; see the module docstring for what is counted. The model runs in
    eval mode without gradients (its mode is restored)."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    first = next(model.parameters(), None)
    device, dtype = (first.device, first.dtype) if first is not None else (torch.device("cpu"), torch.float32)
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if hasattr(module, "matmul_macs"):
            total += int(module.matmul_macs(inputs, output))
        elif isinstance(output, torch.Tensor):
            total += _module_macs(module, inputs, output)

    counted = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
               nn.Linear, *_NORMS)
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, counted) or hasattr(m, "matmul_macs")]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, h, w, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes.items():
            m.training = training
    return params, total
