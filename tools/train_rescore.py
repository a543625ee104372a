"""Train DEKR's pose rescoring net (Geng et al., CVPR 2021) on predictions made on the training set.

    python tools/train_rescore.py --pred predictions.json --gt GT.json --dataset {coco,crowdpose} --out rescore.pth
        [--epochs 20] [--lr 1e-3] [--batch-size 1024] [--hidden 256] [--seed 0]

``predictions.json`` is a COCO results file (image_id, keypoints, score) of the model on the TRAINING images
(``tools/test.py`` on the training split), ``GT.json`` the training annotations. Each prediction is matched to the
GT of its image with the highest OKS, and the net learns to predict that OKS from the pose
(``bupose.methods.dekr.rescore``). Prints the loss of every epoch and saves a plain state_dict with the official
key names (loadable by ``load_rescore_net`` and by the official code), written atomically.
"""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bupose.data.keypoints import get_spec  # noqa: E402
from bupose.errors import DataError  # noqa: E402
from bupose.methods.dekr.rescore import rescore_dataset_from_coco, train_rescore_net  # noqa: E402


def _load(path: str, what: str):
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} file not found: {p}")
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{what} file {p} is not valid JSON: {e}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", required=True, help="COCO results file of predictions on the training images")
    parser.add_argument("--gt", required=True, help="ground truth of those images (COCO format)")
    parser.add_argument("--dataset", default="coco", choices=["coco", "crowdpose"], help="keypoint layout")
    parser.add_argument("--out", required=True, help="where to save the state_dict (.pth)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = get_spec(args.dataset)
    try:
        gt, results = _load(args.gt, "ground truth"), _load(args.pred, "predictions")
        if not isinstance(results, list):
            raise DataError(f"{args.pred}: predictions must be a JSON list of COCO results")
        features, targets = rescore_dataset_from_coco(gt, results, spec)
        if len(features) == 0:
            raise DataError(f"no prediction in {args.pred} lies on an image with ground truth in {args.gt}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(features)} poses, {features.shape[1]} features, mean target OKS {targets.mean():.3f}", flush=True)

    def report(epoch: int, loss: float) -> None:
        print(f"epoch {epoch}/{args.epochs} train_loss {loss:.6f}", flush=True)

    net = train_rescore_net(features, targets, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                            seed=args.seed, hidden=args.hidden, on_epoch=report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, tmp)
    os.replace(tmp, out)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
