"""Test a model with multi-scale + flip testing; writes a COCO results file and prints the metrics.

    python tools/test.py --cfg experiments/<dataset>/<model>.yaml [TEST.MODEL_FILE x.pth]
                         [TEST.FLIP_TEST True] [TEST.SCALE_FACTOR [0.5,1,2]] [KEY VALUE ...]

Without ``TEST.MODEL_FILE`` the run's own ``model_best.pth`` (else ``final_state.pth``, else ``checkpoint.pth``)
in ``OUTPUT_DIR/<dataset>/<config name>/`` is used. Official checkpoints load too. Results go to
``<output dir>/results/<split>_results.json``, metrics to ``<output dir>/results/<split>_metrics.json``.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bupose.config import add_override_arguments, load_config, parse_tool_args  # noqa: E402
from bupose.errors import BuposeError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    """The options (anywhere on the command line) and the KEY VALUE overrides (``args.opts``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="experiment file")
    parser.add_argument("--output-dir", help="default: OUTPUT_DIR/<dataset>/<config name>")
    parser.add_argument("--split", help="default: DATASET.TEST_SET")
    add_override_arguments(parser)
    return parse_tool_args(parser, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        from bupose import build_model, load_checkpoint, save_config
        from bupose.engine.evaluate import evaluate_split
        from bupose.engine.trainer import default_output_dir
        from bupose.engine.checkpoint import ensure_writable_folder
        from bupose.evaluation import format_metrics
        from bupose.inference.predictor import find_weights

        cfg = load_config(args.cfg, args.opts)
        out_dir = Path(args.output_dir) if args.output_dir else default_output_dir(cfg)
        split = args.split or cfg.DATASET.TEST_SET
        ensure_writable_folder(out_dir / "results", "results folder")  # before any work
        weights = find_weights(cfg, out_dir)
        model = build_model(cfg)
        load_checkpoint(model, weights)
        save_config(cfg, out_dir / "results" / f"{split}_test_config.yaml")
        t0 = time.perf_counter()
        metrics = evaluate_split(cfg, model, split, out_dir / "results" / f"{split}_results.json",
                                 limit=cfg.DATASET.MAX_TEST_IMAGES)
        seconds = time.perf_counter() - t0
    except BuposeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (out_dir / "results" / f"{split}_metrics.json").write_text(json.dumps(metrics, indent=1))
    print(format_metrics(metrics, f"{cfg.DATASET.DATASET} {split}: {weights}, scales {cfg.TEST.SCALE_FACTOR}, "
                                  f"flip {cfg.TEST.FLIP_TEST} ({seconds:.0f} s)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
