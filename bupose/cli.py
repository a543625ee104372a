"""The ``bupose`` command: ``bupose train|test|demo|export|eval|summary|plot ...`` runs ``tools/<tool>.py``.

    bupose train --cfg experiments/synthetic/dekr_simple_160.yaml
    bupose test --cfg experiments/synthetic/dekr_simple_160.yaml TEST.FLIP_TEST False
    bupose demo --cfg ... --source image.jpg
    bupose export --cfg ... TEST.MODEL_FILE weights.pth --dynamic
    bupose <command> --help       the tool's options, then the config keys used most with it

Installed by ``pip install -e .`` (a console entry point); the tools stay runnable as ``python tools/<tool>.py``
with the same arguments. ``python -m bupose.cli`` is the same command. For DDP training use
``torchrun ... tools/train.py``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Sequence

#: command -> (tool file under tools/, one-line summary)
COMMANDS = {
    "train": ("train.py", "train a config (resumes a killed run)"),
    "test": ("test.py", "multi-scale + flip test on a dataset split: results file and metrics"),
    "demo": ("demo.py", "draw the people found on an image, a folder, a video or a camera"),
    "export": ("export.py", "export the network to ONNX and check it against PyTorch"),
    "eval": ("eval_json.py", "evaluate a COCO results file against a ground truth"),
    "summary": ("summary.py", "parameters and GMACs of configs"),
    "plot": ("plot.py", "loss and AP per epoch of runs' metrics.csv as a PNG"),
}

#: command -> the config keys most used with it (KEY VALUE overrides), listed by ``bupose <command> --help``
COMMON_KEYS = {
    "train": ("TRAIN.END_EPOCH", "TRAIN.IMAGES_PER_GPU", "TRAIN.LR", "TRAIN.LR_STEP", "TRAIN.VAL_FREQ",
              "TRAIN.AUTO_RESUME", "MODEL.PRETRAINED", "DATASET.ROOT", "OUTPUT_DIR", "WORKERS", "DEVICE", "SEED"),
    "test": ("TEST.MODEL_FILE", "TEST.SCALE_FACTOR", "TEST.FLIP_TEST", "DATASET.TEST_SET",
             "DATASET.MAX_TEST_IMAGES", "TEST.USE_GT_BBOX", "TEST.COCO_BBOX_FILE", "TEST.DETECTOR_CFG",
             "TEST.DETECTOR_MODEL_FILE", "DATASET.ROOT", "DEVICE"),
    "demo": ("TEST.MODEL_FILE", "TEST.SCALE_FACTOR", "TEST.FLIP_TEST", "TEST.MAX_NUM_PEOPLE", "TEST.DETECTOR_CFG",
             "TEST.DETECTOR_MODEL_FILE", "TEST.COCO_BBOX_FILE", "TEST.IMAGE_THRE", "DEVICE"),
    "export": ("TEST.MODEL_FILE", "DATASET.INPUT_SIZE", "MODEL.IMAGE_SIZE", "MODEL.ADAPTIVE_CONV"),
    "summary": (),
    "eval": (),
    "plot": (),
}


def tools_dir() -> Path:
    """The repository's ``tools/`` folder (beside the package in a checkout, as ``pip install -e .`` leaves it)."""
    return Path(__file__).resolve().parents[1] / "tools"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return ("usage: bupose <command> [options] [KEY VALUE ...]\n\ncommands:\n" + "\n".join(lines)
            + "\n\n'bupose <command> --help' shows a command's options and its most used config keys; "
              "'python -m bupose.config' lists every key.")


def keys_help(command: str) -> str:
    """The most used config keys of ``command`` with their defaults and docs (from ``bupose.config.SCHEMA``)."""
    keys = COMMON_KEYS.get(command, ())
    if not keys:
        return ""
    from bupose.config import SCHEMA

    options = {o.key: o for o in SCHEMA}
    width = max(map(len, keys))
    lines = [f"  {k:<{width}}  {options[k].doc} (default {options[k].default!r})" for k in keys if k in options]
    return "most used config keys (KEY VALUE, anywhere on the command line):\n" + "\n".join(lines)


def load_tool(command: str):
    """The module of ``tools/<tool>.py`` for ``command``; SystemExit(2) with a message when it is not there."""
    path = tools_dir() / COMMANDS[command][0]
    if not path.is_file():
        sys.exit(f"error: {path} not found: the bupose command runs the repository's tools/; install the checkout "
                 f"with pip install -e .")
    spec = importlib.util.spec_from_file_location(f"bupose_tool_{command}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        hint = difflib.get_close_matches(command, list(COMMANDS), n=1)
        print(f"error: unknown command {command!r}" + (f"; did you mean {hint[0]!r}?" if hint else "") + "\n\n"
              + usage(), file=sys.stderr)
        return 2
    tool = load_tool(command)
    saved, sys.argv = sys.argv, [f"bupose {command}"] + rest  # argparse's prog in usage lines and errors
    try:
        if any(a in ("-h", "--help") for a in rest):
            try:
                tool.main(["--help"])
            except SystemExit:
                pass
            extra = keys_help(command)
            if extra:
                print("\n" + extra)
            return 0
        return int(tool.main(rest) or 0)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    sys.exit(main())
