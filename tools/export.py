"""Export a model's network to ONNX and check it against PyTorch with onnxruntime.

    python tools/export.py --cfg experiments/<dataset>/<model>.yaml [TEST.MODEL_FILE x.pth] [--format onnx]
                           [--dynamic] [--half] [--output model.onnx] [--image sample.jpg] [KEY VALUE ...]

Every method exports: bottom-up, one-stage and top-down (for top-down, the crop network). Decoding stays in Python:
run the file with ``bupose.Predictor(cfg, "model.onnx")`` or ``tools/demo.py --onnx model.onnx``. The input is the
tensor the method's decoder prepares (fixed to the sample's shape unless ``--dynamic``: free batch, height, width);
the outputs are the model's output dict flattened (``levels.0`` ...). The table of inputs and outputs is printed and
stored in the file's metadata (``bupose.doc``).

Without ``TEST.MODEL_FILE`` the run's own ``model_best.pth`` (else ``final_state.pth``, else ``checkpoint.pth``) is
used; the file goes next to the weights as ``<weights name>.onnx`` unless ``--output``. The check runs onnxruntime and
PyTorch on the sample input (and, with ``--dynamic``, on a second input of another shape) and prints the largest
difference of each output with its tolerance (1e-4, float16: 2e-2, times max(1, largest |output|)); exit code 1
when any is over. Needs ``pip install -e ".[export]"``.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bupose.config import add_override_arguments, load_config, parse_tool_args  # noqa: E402
from bupose.errors import BuposeError  # noqa: E402

#: ``--format`` values
FORMATS = ("onnx",)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="experiment file")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="export format (default onnx)")
    parser.add_argument("--output", help="the .onnx file (default: next to the weights, <weights name>.onnx)")
    parser.add_argument("--dynamic", action="store_true", help="free batch, height and width (any image size and "
                                                                "test scale; top-down: any number of crops)")
    parser.add_argument("--half", action="store_true", help="float16 weights, input and outputs")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16; default 17)")
    parser.add_argument("--exporter", default="torchscript", choices=("torchscript", "dynamo"),
                        help="torch.onnx.export with dynamo=False (default, fast) or the torch.export-based one")
    parser.add_argument("--image", help="an image for the sample input (default: random pixels)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    add_override_arguments(parser)
    return parse_tool_args(parser, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    steps = 4 if not args.no_check else 3
    t_all = time.perf_counter()
    try:
        from bupose import build_model, load_checkpoint
        from bupose.data.io import read_image
        from bupose.export import compare_with_onnxruntime, export_onnx, require, sample_inputs
        from bupose.inference.predictor import find_weights
        from bupose.methods import method_label

        require("onnx")
        if not args.no_check:
            require("onnxruntime")
        cfg = load_config(args.cfg, args.opts + ["DEVICE", "cpu"])
        weights = find_weights(cfg)
        out = Path(args.output) if args.output else weights.with_suffix(".onnx")
        print(f"[1/{steps}] {method_label(cfg.MODEL.NAME)}: building the model and loading {weights}", flush=True)
        model = build_model(cfg)
        load_checkpoint(model, weights)
        model.eval()
        image = read_image(args.image, "--image") if args.image else None
        inputs = sample_inputs(cfg, model, image, dynamic=args.dynamic)
        print(f"[2/{steps}] exporting to {out} ({args.exporter} exporter, opset {args.opset}"
              f"{', dynamic batch/height/width' if args.dynamic else ''}{', float16' if args.half else ''})",
              flush=True)
        result = export_onnx(model, out, cfg=cfg, sample=inputs[0], dynamic=args.dynamic, half=args.half,
                             opset=args.opset, exporter=args.exporter)
        for note in result.notes:
            print(f"      note: {note}")
        size_mb = out.stat().st_size / 1e6
        print(f"[3/{steps}] wrote {out} ({size_mb:.1f} MB) in {result.seconds:.1f} s; inputs and outputs:", flush=True)
        print("\n".join("      " + line for line in result.doc.splitlines()))
        ok = True
        if not args.no_check:
            shapes = " and ".join(str(list(x.shape)) for x in inputs)
            print(f"[4/{steps}] onnxruntime vs PyTorch on {shapes}", flush=True)
            checks = compare_with_onnxruntime(out, model, inputs)
            for c in checks:
                print(f"      {c.name:<12} input {list(c.input_shape)}: max |difference| {c.max_abs:.3g} "
                      f"(tolerance {c.tolerance:.3g}) {'ok' if c.ok else 'OVER'}")
            ok = all(c.ok for c in checks)
    except BuposeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'done' if ok else 'FAILED: outputs differ beyond the tolerance'} in {time.perf_counter() - t_all:.1f} s: "
          f"{out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
