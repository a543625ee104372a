"""DEKR's rescoring net: official features, official weights layout, training recipe, rescoring and the tool."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bupose.data.keypoints import COCO17, CROWDPOSE14, coco17_to_crowdpose14
from bupose.errors import CheckpointError, DataError
from bupose.evaluation import object_keypoint_similarity
from bupose.inference.people import People
from bupose.methods.dekr.rescore import (OFFICIAL_KEYS, RescoreNet, build_rescore_dataset, load_rescore_net,
                                         num_pose_features, pose_features, predict_oks, rescore,
                                         rescore_dataset_from_coco, train_rescore_net)
from bupose.testing import make_eval_case

REPO = Path(__file__).resolve().parents[1]

# Read off github.com/HRNet/DEKR lib/models/predictOKS.py: PredictOKSNet has Linear layers l1 (F -> hidden),
# l2 (hidden -> hidden), l3 (hidden -> 1); a ReLU without parameters.
PREDICT_OKS_KEYS = ["l1.weight", "l1.bias", "l2.weight", "l2.bias", "l3.weight", "l3.bias"]
# lib/utils/rescore.py: JOINT_*_LINK_1 / _2 (limb = link1 - link2), torso normaliser = limbs 9 and 11
COCO_LINKS = ([0, 0, 1, 1, 2, 3, 4, 5, 5, 5, 6, 6, 7, 8, 11, 11, 12, 13, 14],
              [1, 2, 2, 3, 4, 5, 6, 6, 7, 11, 8, 12, 9, 10, 12, 13, 14, 15, 16])
CROWD_LINKS = ([12, 13, 13, 0, 1, 2, 3, 0, 1, 6, 7, 8, 9, 6, 0],
               [13, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 7, 1])


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny MLPs: one thread is much faster on 2 shared cores


def official_shapes(features: int, hidden: int = 256) -> dict:
    return {"l1.weight": (hidden, features), "l1.bias": (hidden,), "l2.weight": (hidden, hidden),
            "l2.bias": (hidden,), "l3.weight": (1, hidden), "l3.bias": (1,)}


def official_state_dict(features: int, hidden: int = 256, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in official_shapes(features, hidden).items()}


def reference_features(kp: np.ndarray, links) -> np.ndarray:
    """A loop-by-loop restatement of the official get_feature, one pose at a time."""
    out = []
    for pose in kp.astype(np.float64):
        vec = [pose[a, :2] - pose[b, :2] for a, b in zip(*links)]
        length = [float(np.hypot(v[0], v[1])) for v in vec]
        norm = max((length[9] + length[11]) / 2, 1.0)
        row = [c / norm for v in vec for c in v] + [x / norm for x in length] + list(pose[:, 2])
        out.append(row)
    return np.asarray(out, np.float32)


# ------------------------------------------------------------------------------------------------------------
# synthetic poses: a standing template, scaled and moved; predictions are noisy copies whose keypoint scores
# fall with the error (as heat values do), mixed with much unrelated noise
# ------------------------------------------------------------------------------------------------------------
TEMPLATE = np.array([[0, -0.90], [0.03, -0.93], [-0.03, -0.93], [0.07, -0.90], [-0.07, -0.90],
                     [0.20, -0.70], [-0.20, -0.70], [0.25, -0.40], [-0.25, -0.40], [0.27, -0.12], [-0.27, -0.12],
                     [0.12, -0.10], [-0.12, -0.10], [0.13, 0.35], [-0.13, 0.35], [0.13, 0.80], [-0.13, 0.80]])


def synthetic_people(n: int, rng: np.random.Generator):
    """``n`` GT poses (COCO-17, v = 2), their areas and boxes, noisy predictions and their true OKS."""
    height = rng.uniform(60, 400, n)
    centre = rng.uniform(300, 700, (n, 2))
    shape = TEMPLATE[None] + rng.normal(0, 0.03, (n, 17, 2))
    gt_xy = centre[:, None] + shape * height[:, None, None]
    gt = np.concatenate([gt_xy, np.full((n, 17, 1), 2.0)], axis=2)
    lo, hi = gt_xy.min(1), gt_xy.max(1)
    boxes = np.concatenate([lo, hi - lo], 1)
    areas = boxes[:, 2] * boxes[:, 3] * 0.7
    level = rng.uniform(0, 0.25, n) ** 1.5
    err = rng.normal(0, 1, (n, 17, 2)) * level[:, None, None] * height[:, None, None]
    pred_xy = gt_xy + err
    dist = np.linalg.norm(err, axis=2) / height[:, None]
    score = 0.2 * np.exp(-dist * 8) + 0.8 * rng.uniform(0, 1, (n, 17))  # weakly informative: shape must count
    pred = np.concatenate([pred_xy, score[..., None]], axis=2)
    oks = object_keypoint_similarity(pred, gt, boxes, areas, COCO17.sigmas_array)
    return gt, boxes, areas, pred, oks


def annotation(kp, box, area, ann_id, iscrowd=0):
    return {"id": ann_id, "image_id": 1, "category_id": 1, "iscrowd": iscrowd, "bbox": [float(v) for v in box],
            "area": float(area), "num_keypoints": int((kp[:, 2] > 0).sum()), "keypoints": kp.reshape(-1).tolist()}


# ------------------------------------------------------------------------------------------------------------
def test_feature_sizes_are_official():
    assert num_pose_features(COCO17) == 2 * 19 + 19 + 17 == 74
    assert num_pose_features(CROWDPOSE14) == 2 * 15 + 15 + 14 == 59
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 500, (5, 17, 2)), rng.uniform(0, 1, (5, 17, 1))], 2)
    assert pose_features(kp, COCO17).shape == (5, 74)
    assert pose_features(coco17_to_crowdpose14(kp), CROWDPOSE14).shape == (5, 59)
    assert pose_features(np.zeros((0, 17, 3)), COCO17).shape == (0, 74)
    with pytest.raises(ValueError, match="17, 3"):
        pose_features(np.zeros((2, 14, 3)), COCO17)


@pytest.mark.parametrize("spec,links", [(COCO17, COCO_LINKS), (CROWDPOSE14, CROWD_LINKS)])
def test_features_match_official_definition(spec, links):
    rng = np.random.default_rng(1)
    k = spec.num_keypoints
    kp = np.concatenate([rng.uniform(0, 500, (6, k, 2)), rng.uniform(0, 1, (6, k, 1))], 2)
    kp[0, :, :2] = 100.0  # collapsed pose: body size 0 -> clamped to 1
    kp[1, :, :2] = kp[1, :, :2] * 0.001  # tiny pose: body size < 1 -> 1
    np.testing.assert_allclose(pose_features(kp, spec), reference_features(kp, links), rtol=1e-6, atol=1e-6)
    # scale and translation invariant when the body is larger than 1 pixel; the scores are passed through
    big = kp[2:].copy()
    big[..., :2] = big[..., :2] * 3 + 17
    np.testing.assert_allclose(pose_features(big, spec), pose_features(kp[2:], spec), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pose_features(kp, spec)[:, -k:], kp[:, :, 2].astype(np.float32))


@pytest.mark.parametrize("spec,features", [(COCO17, 74), (CROWDPOSE14, 59)])
def test_official_state_dict_loads_unchanged(spec, features, tmp_path):
    net = RescoreNet(features)
    assert set(net.state_dict()) == set(PREDICT_OKS_KEYS) == set(OFFICIAL_KEYS)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == official_shapes(features)
    sd = official_state_dict(features)
    path = tmp_path / "final_rescore.pth"
    torch.save(sd, path)
    for source in (sd, str(path), path, {"module." + k: v for k, v in sd.items()}, {"state_dict": sd}):
        loaded = load_rescore_net(source, spec)
        assert not loaded.training
        for k, v in loaded.state_dict().items():
            torch.testing.assert_close(v, sd[k], rtol=0, atol=0)
    # hidden width is read from the checkpoint
    assert load_rescore_net(official_state_dict(features, hidden=32), spec).hidden == 32


def test_mismatched_checkpoint_says_what_differs(tmp_path):
    with pytest.raises(CheckpointError, match=r"59 input features.*'coco'.*74.*'crowdpose'"):
        load_rescore_net(official_state_dict(59), COCO17)
    with pytest.raises(CheckpointError, match=r"74 input features.*59.*'coco'"):
        load_rescore_net(official_state_dict(74), CROWDPOSE14)
    sd = official_state_dict(74)
    missing = {k: v for k, v in sd.items() if k != "l3.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys \['l3.bias'\]"):
        load_rescore_net(missing, COCO17)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['l4.weight'\]"):
        load_rescore_net({**sd, "l4.weight": torch.zeros(1)}, COCO17)
    bad = dict(sd, **{"l2.weight": torch.zeros(256, 128)})
    with pytest.raises(CheckpointError, match=r"l2.weight: checkpoint \(256, 128\), expected \(256, 256\)"):
        load_rescore_net(bad, COCO17)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_rescore_net(junk, COCO17)
    with pytest.raises(CheckpointError):
        load_rescore_net([1, 2], COCO17)


def test_training_learns_oks():
    rng = np.random.default_rng(0)
    _, _, _, pred, oks = synthetic_people(2400, rng)
    feats = pose_features(pred, COCO17)
    losses = []
    net = train_rescore_net(feats[:1600], oks[:1600], epochs=10, lr=1e-3, batch_size=64, seed=0,
                            on_epoch=lambda e, loss: losses.append(loss))
    assert len(losses) == 10 and losses[-1] < 0.5 * losses[0]
    held = predict_oks(net, feats[1600:])
    r = np.corrcoef(held, oks[1600:])[0, 1]
    assert r > 0.8, r
    # the pose shape carries most of it: the mean keypoint score alone predicts OKS much worse
    r_score = np.corrcoef(feats[1600:, -17:].mean(1), oks[1600:])[0, 1]
    assert r > r_score + 0.15, (r, r_score)
    # same seed, same net
    again = train_rescore_net(feats[:500], oks[:500], epochs=2, batch_size=64, seed=3)
    twice = train_rescore_net(feats[:500], oks[:500], epochs=2, batch_size=64, seed=3)
    for a, b in zip(again.parameters(), twice.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # fewer samples than a batch: one batch of all of them
    small = []
    train_rescore_net(feats[:10], oks[:10], epochs=1, batch_size=1024, on_epoch=lambda e, loss: small.append(loss))
    assert len(small) == 1 and np.isfinite(small[0])


def test_rescore_multiplies_predicted_oks_with_score():
    rng = np.random.default_rng(2)
    kp = np.concatenate([rng.uniform(0, 300, (4, 17, 2)), rng.uniform(0, 1, (4, 17, 1))], 2).astype(np.float32)
    people = People(kp, kp[:, :, 2].mean(1))
    net = RescoreNet(74)
    sd = net.state_dict()
    sd["l3.weight"].zero_()
    sd["l3.bias"].fill_(0.5)
    net.load_state_dict(sd)
    out = rescore(people, net, COCO17)
    np.testing.assert_allclose(out.scores, people.scores * 0.5, rtol=1e-6)
    np.testing.assert_array_equal(out.keypoints, people.keypoints)
    assert out.scores.dtype == people.scores.dtype and out.keypoints is not people.keypoints
    # a general net: predicted OKS (not clipped) times the old score, order kept
    net = RescoreNet(74)
    net.init_weights(torch.Generator().manual_seed(1))
    pred = predict_oks(net, pose_features(kp, COCO17))
    np.testing.assert_allclose(rescore(people, net, COCO17).scores, pred * people.scores, rtol=1e-6)
    # NaN predictions count as 0
    sd["l3.bias"].fill_(float("nan"))
    nan_net = RescoreNet(74)
    nan_net.load_state_dict(sd)
    np.testing.assert_array_equal(rescore(people, nan_net, COCO17).scores, np.zeros(4, np.float32))
    assert len(rescore(People.empty(17), net, COCO17)) == 0
    with pytest.raises(CheckpointError, match="59"):
        rescore(people, RescoreNet(59), COCO17)


def test_dataset_matches_each_prediction_to_best_gt():
    rng = np.random.default_rng(3)
    gt, boxes, areas, pred, oks = synthetic_people(3, rng)
    anns = [annotation(gt[i], boxes[i], areas[i], i + 1) for i in range(3)]
    # image 0: all three people, predictions in shuffled order; image 1: no GT (skipped)
    order = np.array([2, 0, 1])
    people = People(pred[order], np.array([0.9, 0.5, 0.7]))
    feats, targets = build_rescore_dataset([people, People(pred[:1], np.ones(1))], [anns, []], COCO17)
    by_score = order[np.argsort([-0.9, -0.5, -0.7], kind="stable")]  # dets are taken by score, as COCOeval
    np.testing.assert_allclose(targets, oks[by_score], rtol=1e-6)
    np.testing.assert_allclose(feats, pose_features(pred[by_score], COCO17))
    # only the top max_detections per image
    _, t2 = build_rescore_dataset([people], [anns], COCO17, max_detections=2)
    np.testing.assert_allclose(t2, oks[by_score[:2]], rtol=1e-6)
    # a GT without labelled keypoints is ignored while a regular GT exists ...
    empty_kp = np.zeros((17, 3))
    far = annotation(empty_kp, [0, 0, 2000, 2000], 4e6, 9)
    _, t3 = build_rescore_dataset([people], [anns + [far]], COCO17)
    np.testing.assert_allclose(t3, targets, rtol=1e-6)
    # ... and alone it gives OKS 1 for a pose inside its box, which the official loader turns into 0
    _, t4 = build_rescore_dataset([people], [[far]], COCO17)
    np.testing.assert_array_equal(t4, np.zeros(3, np.float32))
    _, t5 = build_rescore_dataset([people], [[far]], COCO17, perfect_to_zero=False)
    np.testing.assert_array_equal(t5, np.ones(3, np.float32))
    # CrowdPose: OKS scale 0.53 * w * h, not the area field
    cp_gt = coco17_to_crowdpose14(gt)
    cp_gt[..., 2] = 2
    cp_anns = [annotation(cp_gt[i], boxes[i], 1.0, i + 1) for i in range(3)]
    cp_pred = coco17_to_crowdpose14(pred)
    _, t6 = build_rescore_dataset([People(cp_pred, np.ones(3))], [cp_anns], CROWDPOSE14)
    want = object_keypoint_similarity(cp_pred, cp_gt, boxes, 0.53 * boxes[:, 2] * boxes[:, 3],
                                      CROWDPOSE14.sigmas_array)
    np.testing.assert_allclose(t6, want, rtol=1e-6)
    with pytest.raises(DataError, match="2 prediction lists but 1"):
        build_rescore_dataset([people, people], [anns], COCO17)


def _tool():
    spec = importlib.util.spec_from_file_location("train_rescore", REPO / "tools" / "train_rescore.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("dataset,spec", [("coco", COCO17), ("crowdpose", CROWDPOSE14)])
def test_tool_end_to_end(tmp_path, capsys, dataset, spec):
    gt, dets = make_eval_case(12, 6, spec, seed=4)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(dets))
    out = tmp_path / "model" / "rescore.pth"
    rc = _tool().main(["--pred", str(tmp_path / "pred.json"), "--gt", str(tmp_path / "gt.json"), "--dataset",
                       dataset, "--out", str(out), "--epochs", "3", "--batch-size", "16", "--hidden", "32"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "epoch 1/3 train_loss" in printed and "epoch 3/3 train_loss" in printed
    assert out.is_file() and not (out.parent / "rescore.pth.tmp").exists()
    net = load_rescore_net(out, spec)
    assert net.l1.in_features == num_pose_features(spec) and net.hidden == 32
    feats, targets = rescore_dataset_from_coco(gt, dets, spec)
    assert len(feats) > 0 and 0 <= targets.min() and targets.max() <= 1


def test_tool_reports_bad_input(tmp_path, capsys):
    gt, dets = make_eval_case(3, 4, COCO17, seed=5)
    dets.append(dict(dets[0], image_id=424242))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(dets))
    rc = _tool().main(["--pred", str(tmp_path / "pred.json"), "--gt", str(tmp_path / "gt.json"),
                       "--out", str(tmp_path / "r.pth")])
    assert rc == 2 and "424242" in capsys.readouterr().err
    assert not (tmp_path / "r.pth").exists()
