"""DEKR's pose rescoring net: an MLP that predicts how good a pose is (its OKS with the ground truth) from its shape.

From Geng et al., "Bottom-Up Human Pose Estimation Via Disentangled Keypoint Regression", CVPR 2021
(github.com/HRNet/DEKR, ``lib/models/predictOKS.py``, ``lib/utils/rescore.py``): bottom-up poses are ranked by a
score that knows nothing about whether the pose is plausible; a small network trained to regress a pose's OKS
with its matched ground truth re-ranks them, which raises AP (the ranking decides precision).

What this module reproduces, so that the official weights (``final_rescore_coco_kpt.pth``,
``final_rescore_crowd_pose_kpt.pth``; plain state_dicts) load and behave unchanged:

* **Features** (:func:`pose_features`), per pose, from its ``(K, 3)`` keypoints (x, y, keypoint score) and a fixed
  list of L limbs ``(a, b)`` (not ``KeypointSpec.skeleton``: the official tables, :data:`OFFICIAL_LIMBS`):
  the limb vectors ``p[a] - p[b]`` as ``dx_0, dy_0, dx_1, dy_1, ...`` (2L values), the limb lengths (L values), both
  divided by a body size, then the K keypoint scores; ``F = 3L + K`` (COCO-17: 19 limbs, F = 74; CrowdPose-14:
  15 limbs, F = 59). The body size is the mean length of two given limbs, raised to 1 when smaller; for COCO these
  are left and right shoulder-hip, for CrowdPose (the official table's limbs 9 and 11) left hip-knee and left
  knee-ankle. The keypoint score is the third column of the final poses, i.e. DEKR's centre score times the heat
  value (what :class:`~bupose.methods.dekr.decode.DEKRDecoder` returns).
* **Net** (:class:`RescoreNet`): ``l1`` Linear(F, 256) - ReLU - ``l2`` Linear(256, 256) - ReLU - ``l3``
  Linear(256, 1); keys ``l1.weight``, ``l1.bias``, ``l2.*``, ``l3.*``. Training init: Kaiming-uniform (a = 1),
  zero biases.
* **Use** (:func:`rescore`): the official ``valid.py`` multiplies: ``new score = net(features) * score`` (the
  person score being the mean keypoint score), NaN predictions counted as 0. The keypoints are unchanged and
  nothing is re-sorted.
* **Training** (:func:`build_rescore_dataset`, :func:`train_rescore_net`): each prediction on a training image is
  matched to the GT of its image with the highest OKS (as the official ``COCORescoreEval``: only the top
  ``maxDets = 20`` detections per image by score; regular GTs first, the ignored ones (crowd, no labelled
  keypoint) only when the image has no regular GT; images without GT contribute nothing; a target of exactly 1 is
  set to 0, as the official data loader does); the net is fitted with MSE and Adam (lr 1e-3), 20 epochs, batches of
  1024 shuffled each epoch, the last incomplete batch dropped.

Differences from the official code, on purpose: loading is strict and explains a mismatch (the official code loads
with ``strict=False``, so a checkpoint of another layout fails silently or late); when there are fewer samples
than one batch, one batch of all of them is used (the official loop divides by zero); the official COCO data file
holds every detection three times, once per evaluation area range (all, medium, large; in the last two the GTs
outside the range count as ignored), bupose takes each once with the ``all`` range.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from bupose.data.keypoints import KeypointSpec
from bupose.errors import CheckpointError, DataError
from bupose.evaluation import PROTOCOLS, object_keypoint_similarity
from bupose.inference.people import People

#: Official limb tables per layout name: ``(limbs, (i, j))``; the body size is the mean length of limbs i and j.
OFFICIAL_LIMBS: dict[str, tuple[tuple[tuple[int, int], ...], tuple[int, int]]] = {
    "coco": (((0, 1), (0, 2), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 6), (5, 7), (5, 11), (6, 8), (6, 12),
              (7, 9), (8, 10), (11, 12), (11, 13), (12, 14), (13, 15), (14, 16)), (9, 11)),
    "crowdpose": (((12, 13), (13, 0), (13, 1), (0, 2), (1, 3), (2, 4), (3, 5), (0, 6), (1, 7), (6, 8), (7, 9),
                   (8, 10), (9, 11), (6, 7), (0, 1)), (9, 11)),
}
OFFICIAL_LIMBS["ochuman"] = OFFICIAL_LIMBS["coco"]
_OFFICIAL_K = {"coco": 17, "ochuman": 17, "crowdpose": 14}

#: The parameter names of the official ``PredictOKSNet`` (lib/models/predictOKS.py).
OFFICIAL_KEYS = ("l1.weight", "l1.bias", "l2.weight", "l2.bias", "l3.weight", "l3.bias")
DEFAULT_HIDDEN = 256  # RESCORE.HIDDEN_LAYER


def rescore_limbs(spec: KeypointSpec) -> tuple[tuple[tuple[int, int], ...], tuple[int, int] | None]:
    """The limbs the features are built from and the two limbs whose mean length is the body size.

    The official tables for ``coco``/``ochuman``/``crowdpose``. Another layout (bupose's own extension, no
    official weights exist for it) uses ``spec.skeleton`` and ``None``: the body size is then the mean length of
    all its limbs.
    """
    table = OFFICIAL_LIMBS.get(spec.name)
    if table is not None:
        if spec.num_keypoints != _OFFICIAL_K[spec.name]:
            raise ValueError(f"keypoint layout {spec.name!r} has {spec.num_keypoints} keypoints; the official "
                             f"rescoring limb table of that name is for {_OFFICIAL_K[spec.name]}")
        return table
    if not spec.skeleton:
        raise ValueError(f"keypoint layout {spec.name!r} has no skeleton to build rescoring features from")
    return tuple(spec.skeleton), None


def num_pose_features(spec: KeypointSpec) -> int:
    """F = 3 L + K: the length of :func:`pose_features` rows for ``spec`` (COCO 74, CrowdPose 59)."""
    limbs, _ = rescore_limbs(spec)
    return 3 * len(limbs) + spec.num_keypoints


def _feature_layout(spec: KeypointSpec) -> str:
    limbs, _ = rescore_limbs(spec)
    return (f"{2 * len(limbs)} limb offsets + {len(limbs)} limb lengths + {spec.num_keypoints} keypoint scores "
            f"= {num_pose_features(spec)}")


def pose_features(keypoints, spec: KeypointSpec) -> np.ndarray:
    """The rescoring net's input features.

    Args:
        keypoints: ``(N, K, 3)`` x, y (image pixels) and keypoint score per pose.
        spec: the keypoint layout (selects the limb table).
    Returns:
        ``(N, F)`` float32, ``F = 3 L + K``: ``[dx_0, dy_0, ..., dx_{L-1}, dy_{L-1}, len_0, ..., len_{L-1},
        score_0, ..., score_{K-1}]``, offsets and lengths divided by the body size (computed in float64, as the
        official numpy code).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    k = spec.num_keypoints
    if kp.ndim != 3 or kp.shape[1:] != (k, 3):
        raise ValueError(f"pose_features expects (N, {k}, 3) keypoints for layout {spec.name!r}, got shape "
                         f"{kp.shape}")
    limbs, norm = rescore_limbs(spec)
    a = np.array([p for p, _ in limbs], dtype=np.int64)
    b = np.array([q for _, q in limbs], dtype=np.int64)
    vec = kp[:, a, :2] - kp[:, b, :2]  # (N, L, 2)
    length = np.sqrt(vec[..., 0] ** 2 + vec[..., 1] ** 2)  # (N, L)
    size = length[:, list(norm)].mean(1) if norm is not None else length.mean(1)  # (N,)
    size = np.where(size < 1, 1.0, size)[:, None]
    offsets = (vec / size[..., None]).reshape(len(kp), 2 * len(limbs))
    feats = np.concatenate([offsets, length / size, kp[:, :, 2]], axis=1)
    return feats.astype(np.float32)


class RescoreNet(nn.Module):
    """The official ``PredictOKSNet``: ``(B, F)`` features -> ``(B, 1)`` predicted OKS.

    Args:
        in_features: F (see :func:`num_pose_features`).
        hidden: width of both hidden layers (official 256).
    """

    def __init__(self, in_features: int, hidden: int = DEFAULT_HIDDEN):
        super().__init__()
        self.in_features, self.hidden = int(in_features), int(hidden)
        self.l1 = nn.Linear(self.in_features, self.hidden)
        self.l2 = nn.Linear(self.hidden, self.hidden)
        self.l3 = nn.Linear(self.hidden, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(self.relu(self.l2(self.relu(self.l1(x)))))

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """The official training init: Kaiming-uniform weights (a = 1), zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=1, generator=generator)
                nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------
def _read_state_dict(checkpoint) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, (str, os.PathLike)):
        from bupose.engine.checkpoint import read_checkpoint

        checkpoint = read_checkpoint(checkpoint)  # checked: corrupted, empty or foreign files are named as such
    if isinstance(checkpoint, nn.Module):
        checkpoint = checkpoint.state_dict()
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"a rescoring checkpoint must be a state_dict (dict of tensors), got "
                              f"{type(checkpoint).__name__}")
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
    sd = dict(checkpoint)
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"a rescoring checkpoint must be a dict of tensors; entries {bad[:5]} are not")
    return sd


def load_rescore_net(checkpoint, spec: KeypointSpec, device: str | torch.device = "cpu") -> RescoreNet:
    """A :class:`RescoreNet` for ``spec`` with the weights of ``checkpoint``, in eval mode.

    Args:
        checkpoint: a path, a state_dict (official: ``l1.weight`` ... ``l3.bias``; ``{"state_dict": ...}`` wrappers
            and DataParallel's ``module.`` prefix are accepted) or a RescoreNet.
        spec: the keypoint layout the poses will be in; the hidden width is read from the checkpoint.
    Raises:
        CheckpointError: unreadable, keys other than the official six, a feature count that does not fit the
            layout (e.g. a CrowdPose net for COCO poses), or inconsistent layer shapes.
    """
    sd = _read_state_dict(checkpoint)
    missing, unexpected = set(OFFICIAL_KEYS) - set(sd), set(sd) - set(OFFICIAL_KEYS)
    if missing or unexpected:
        raise CheckpointError(f"not a DEKR rescoring net (PredictOKSNet) checkpoint: missing keys "
                              f"{sorted(missing) or 'none'}, unexpected keys {sorted(unexpected)[:8] or 'none'} "
                              f"(expected exactly {list(OFFICIAL_KEYS)})")
    w1 = sd["l1.weight"]
    if w1.ndim != 2:
        raise CheckpointError(f"l1.weight should be 2-D (hidden, features), has shape {tuple(w1.shape)}")
    hidden, feats = int(w1.shape[0]), int(w1.shape[1])
    expected = num_pose_features(spec)
    if feats != expected:
        others = [name for name in ("coco", "crowdpose")
                  if 3 * len(OFFICIAL_LIMBS[name][0]) + _OFFICIAL_K[name] == feats]
        hint = f"; it fits the {others[0]!r} layout" if others and others[0] != spec.name else ""
        raise CheckpointError(f"rescoring checkpoint takes {feats} input features (l1.weight {tuple(w1.shape)}), "
                              f"but poses of the {spec.name!r} layout ({spec.num_keypoints} keypoints) give "
                              f"{_feature_layout(spec)}{hint}")
    net = RescoreNet(feats, hidden)
    ours = net.state_dict()
    wrong = [f"{k}: checkpoint {tuple(sd[k].shape)}, expected {tuple(v.shape)}" for k, v in ours.items()
             if sd[k].shape != v.shape]
    if wrong:
        raise CheckpointError("rescoring checkpoint has inconsistent layer shapes: " + "; ".join(wrong))
    net.load_state_dict({k: v.float() for k, v in sd.items()})
    return net.to(device).eval()


# ----------------------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_oks(net: RescoreNet, features) -> np.ndarray:
    """``(N, F)`` features -> ``(N,)`` float32 predicted OKS (NaN -> 0, as the official code); no clipping."""
    x = torch.as_tensor(np.asarray(features, np.float32))
    param = next(net.parameters())
    was_training = net.training
    net.eval()
    try:
        y = net(x.to(param.device, param.dtype))[:, 0].float().cpu().numpy()
    finally:
        net.train(was_training)
    return np.nan_to_num(y, nan=0.0).astype(np.float32)


def rescore(people: People, net: RescoreNet, spec: KeypointSpec) -> People:
    """Rescore the poses of one image as the official ``valid.py``: ``scores = net(features) * scores``.

    Args:
        people: ``keypoints (N, K, 3)`` in image pixels (x, y, keypoint score), ``scores (N,)``.
    Returns:
        New People with the same keypoints (a copy) and ``(N,)`` scores = predicted OKS (NaN -> 0) times the old
        scores, in the old order.
    """
    kp = np.asarray(people.keypoints)
    old = np.asarray(people.scores)
    if len(kp) == 0:
        return People(kp.copy(), old.copy())
    feats = pose_features(kp, spec)
    if feats.shape[1] != net.l1.in_features:
        raise CheckpointError(f"rescoring net takes {net.l1.in_features} features, poses of the {spec.name!r} "
                              f"layout give {_feature_layout(spec)}")
    new = predict_oks(net, feats) * old.astype(np.float32)
    return People(kp.copy(), new.astype(old.dtype if np.issubdtype(old.dtype, np.floating) else np.float32))


# ----------------------------------------------------------------------------------------------------------------
# Training data and training
# ----------------------------------------------------------------------------------------------------------------
def _gt_arrays(anns: Sequence[Mapping], spec: KeypointSpec, where: str):
    k = spec.num_keypoints
    factor = PROTOCOLS[spec.name].box_area_factor if spec.name in PROTOCOLS else None
    kpts = np.zeros((len(anns), k, 3))
    boxes = np.zeros((len(anns), 4))
    areas = np.zeros(len(anns))
    ignore = np.zeros(len(anns), bool)
    for i, a in enumerate(anns):
        what = f"{where}, annotation id {a.get('id')}"
        kp = a.get("keypoints")
        if kp is None or len(kp) != 3 * k:
            raise DataError(f"{what}: 'keypoints' has {None if kp is None else len(kp)} values, expected {3 * k}")
        if "bbox" not in a or len(a["bbox"]) != 4:
            raise DataError(f"{what}: 'bbox' must be [x, y, w, h]")
        kpts[i] = np.asarray(kp, np.float64).reshape(k, 3)
        boxes[i] = a["bbox"]
        if factor is not None:
            areas[i] = factor * a["bbox"][2] * a["bbox"][3]
        elif "area" in a:
            areas[i] = a["area"]
        else:
            raise DataError(f"{what}: missing 'area' (the OKS scale of the {spec.name!r} protocol)")
        n_labelled = a.get("num_keypoints", int((kpts[i, :, 2] > 0).sum()))
        ignore[i] = bool(a.get("iscrowd", 0)) or n_labelled == 0
    return kpts, boxes, areas, ignore


def build_rescore_dataset(predictions: Sequence[People], ground_truth: Sequence[Sequence[Mapping]],
                          spec: KeypointSpec, max_detections: int | None = 20,
                          perfect_to_zero: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Features of predicted poses and the OKS with their best-matching ground truth (the training set).

    Args:
        predictions: per image, the People predicted on it (image pixels; keypoint scores in column 3).
        ground_truth: per image (same order), its COCO-format annotations (``keypoints`` flat ``3K``, ``bbox``,
            ``area`` unless CrowdPose, ``num_keypoints``, ``iscrowd``).
        max_detections: only the top-scoring ones per image (official 20; None: all).
        perfect_to_zero: set targets of exactly 1 to 0 as the official loader does (they come from a detection
            inside the box of a GT without labelled keypoints).
    Returns:
        ``features (M, F)`` float32 and ``targets (M,)`` float32, images without GT skipped.
    """
    if len(predictions) != len(ground_truth):
        raise DataError(f"build_rescore_dataset: {len(predictions)} prediction lists but {len(ground_truth)} "
                        f"ground-truth lists (one of each per image)")
    sigmas = spec.sigmas_array
    feats, targets = [], []
    for i, (people, anns) in enumerate(zip(predictions, ground_truth)):
        if len(people) == 0 or len(anns) == 0:
            continue
        det = np.asarray(people.keypoints, np.float64)
        order = np.argsort(-np.asarray(people.scores, np.float64), kind="mergesort")
        if max_detections is not None:
            order = order[:max_detections]
        det = det[order]
        kpts, boxes, areas, ignore = _gt_arrays(anns, spec, f"image #{i}")
        d, g = len(det), len(kpts)
        oks = object_keypoint_similarity(np.repeat(det, g, axis=0), np.tile(kpts, (d, 1, 1)), np.tile(boxes, (d, 1)),
                                         np.tile(areas, d), sigmas).reshape(d, g)
        pool = ~ignore if (~ignore).any() else ignore
        best = oks[:, pool].max(1)
        if perfect_to_zero:
            best = np.where(best == 1, 0.0, best)
        feats.append(pose_features(det, spec))
        targets.append(best.astype(np.float32))
    if not feats:
        return np.zeros((0, num_pose_features(spec)), np.float32), np.zeros((0,), np.float32)
    return np.concatenate(feats), np.concatenate(targets)


def rescore_dataset_from_coco(gt, results, spec: KeypointSpec, category_id: int = 1,
                              **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """:func:`build_rescore_dataset` from a COCO GT dict and a COCO results list (already loaded JSON).

    Results whose image is not in the GT raise DataError; GT images without results contribute nothing.
    """
    for key in ("images", "annotations"):
        if key not in gt:
            raise DataError(f"ground truth has no '{key}' list (not a COCO-format file)")
    k = spec.num_keypoints
    image_ids = [im["id"] for im in gt["images"]]
    anns = {i: [] for i in image_ids}
    for a in gt["annotations"]:
        if a.get("category_id", category_id) == category_id and a.get("image_id") in anns:
            anns[a["image_id"]].append(a)
    dets: dict = {i: [] for i in image_ids}
    for n, r in enumerate(results):
        if r.get("category_id", category_id) != category_id:
            continue
        for key in ("image_id", "keypoints", "score"):
            if key not in r:
                raise DataError(f"result #{n} has no '{key}' (COCO results format: image_id, keypoints, score)")
        if r["image_id"] not in dets:
            raise DataError(f"result #{n} refers to image id {r['image_id']}, which is not in the ground truth")
        if len(r["keypoints"]) != 3 * k:
            raise DataError(f"result #{n} has {len(r['keypoints'])} keypoint values, expected {3 * k} for the "
                            f"{spec.name!r} layout")
        dets[r["image_id"]].append(r)
    people = []
    for i in image_ids:
        rs = dets[i]
        people.append(People(np.asarray([r["keypoints"] for r in rs], np.float64).reshape(len(rs), k, 3),
                             np.asarray([r["score"] for r in rs], np.float64)))
    return build_rescore_dataset(people, [anns[i] for i in image_ids], spec, **kwargs)


def train_rescore_net(features, targets, epochs: int = 20, lr: float = 1e-3, batch_size: int = 1024,
                      seed: int = 0, hidden: int = DEFAULT_HIDDEN,
                      on_epoch: Callable[[int, float], None] | None = None,
                      device: str | torch.device = "cpu") -> RescoreNet:
    """Fit a :class:`RescoreNet` with the official recipe (MSE, Adam, shuffled batches, last partial batch dropped).

    Args:
        features: ``(M, F)``; targets: ``(M,)`` or ``(M, 1)`` OKS.
        seed: seeds the init and the shuffling (the global RNGs are left alone).
        on_epoch: called with ``(epoch starting at 1, mean batch loss)`` after each epoch.
    Returns:
        The trained net, in eval mode, on ``device``.
    """
    x = torch.as_tensor(np.asarray(features, np.float32))
    y = torch.as_tensor(np.asarray(targets, np.float32)).reshape(-1, 1)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"train_rescore_net: features must be (M, F) and targets (M,), got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if len(x) == 0:
        raise DataError("train_rescore_net: no training samples (no predictions on images with ground truth?)")
    gen = torch.Generator().manual_seed(seed)
    net = RescoreNet(x.shape[1], hidden)
    net.init_weights(gen)
    net.to(device).train()
    x, y = x.to(device), y.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    n = len(x)
    bs = min(batch_size, n)
    n_batches = n // bs
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for i in range(n_batches):
            idx = perm[i * bs:(i + 1) * bs]
            opt.zero_grad()
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item()
        mean = total / n_batches
        if not math.isfinite(mean):
            raise FloatingPointError(f"rescoring net training diverged at epoch {epoch} (loss {mean})")
        if on_epoch is not None:
            on_epoch(epoch, mean)
    return net.eval()


__all__ = ["RescoreNet", "pose_features", "num_pose_features", "rescore_limbs", "rescore", "predict_oks",
           "load_rescore_net", "build_rescore_dataset", "rescore_dataset_from_coco", "train_rescore_net",
           "OFFICIAL_LIMBS", "OFFICIAL_KEYS"]
