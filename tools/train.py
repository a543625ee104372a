"""Train a model.

    python tools/train.py --cfg experiments/<dataset>/<model>.yaml [KEY VALUE ...] [--resume [FILE]] [--output-dir DIR]
      (options and KEY VALUE overrides in any order)
    torchrun --nproc_per_node N tools/train.py --cfg ...            # DistributedDataParallel

Writes to ``OUTPUT_DIR/<dataset>/<config name>/``: ``config.yaml`` (the resolved config), ``checkpoint.pth``
(every epoch, atomically), ``model_best.pth`` (best validation AP), ``final_state.pth``, ``metrics.csv``
(and TensorBoard logs when tensorboard is installed). A killed run continues where it stopped when started again
(``TRAIN.AUTO_RESUME``, on by default) or with ``--resume``; the interrupted epoch is repeated exactly.
"""
import argparse
import logging
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bupose.config import add_override_arguments, load_config, parse_tool_args  # noqa: E402
from bupose.errors import BuposeError  # noqa: E402


def _is_config_key(text: str) -> bool:
    """``TRAIN.END_EPOCH``-like (upper-case dotted names; a typo is reported by the config's 'did you mean')."""
    return re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*", text) is not None


def _split_bare_resume(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without a ``--resume`` that is directly followed by a config key rather than a checkpoint file
    (``--resume TRAIN.END_EPOCH 3``: the flag, then overrides), and whether there was one."""
    for i, word in enumerate(argv[:-1]):
        if word == "--resume" and _is_config_key(argv[i + 1]) and not Path(argv[i + 1]).exists():
            return argv[:i] + argv[i + 1:], True
    return argv, False


def parse_args(argv=None) -> argparse.Namespace:
    """The options (anywhere on the command line) and the KEY VALUE overrides (``args.opts``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="experiment file")
    parser.add_argument("--resume", nargs="?", const=True, default=None,
                        help="continue from the output folder's checkpoint (or from the given checkpoint file)")
    parser.add_argument("--output-dir", help="default: OUTPUT_DIR/<dataset>/<config name>")
    add_override_arguments(parser)
    argv, bare_resume = _split_bare_resume(list(sys.argv[1:] if argv is None else argv))
    args = parse_tool_args(parser, argv)
    if bare_resume:
        args.resume = True
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        from bupose.engine.trainer import Trainer

        cfg = load_config(args.cfg, args.opts)
        trainer = Trainer(cfg, args.output_dir, resume=args.resume)
        history = trainer.train()
    except BuposeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if trainer.rank == 0:
        last = history[-1] if history else {}
        print(f"done: {trainer.output_dir} (epoch {last.get('epoch', trainer.start_epoch)}, "
              f"loss {last.get('loss', float('nan')):.4g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
