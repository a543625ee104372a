"""bupose.inference.flip: mirrored inputs, flip-back of maps, offsets and poses, and that they agree with a mirrored
image."""
import numpy as np
import pytest
import torch

from bupose.data.keypoints import COCO17, CROWDPOSE14
from bupose.inference.flip import (flip_back_boxes, flip_back_maps, flip_back_offsets, flip_back_points,
                                   flip_back_poses, flip_input, pair_flip_index)

from test_geometry import centroid, dot_image

FI = list(COCO17.flip_index)


def _poses(rng, n, k, width, height):
    return np.concatenate([rng.uniform(0, width - 1, (n, k, 1)), rng.uniform(0, height - 1, (n, k, 1)),
                           rng.uniform(0, 1, (n, k, 1))], -1)


def test_flip_twice_is_identity(rng):
    x = torch.from_numpy(rng.normal(size=(2, 3, 7, 11))).float()
    assert torch.equal(flip_input(flip_input(x)), x)
    maps = rng.normal(size=(2, 17, 5, 9))
    np.testing.assert_array_equal(flip_back_maps(flip_back_maps(maps, FI), FI), maps)
    t = torch.from_numpy(maps)
    assert torch.equal(flip_back_maps(flip_back_maps(t, FI), FI), t)
    offsets = rng.normal(size=(1, 34, 5, 9))
    np.testing.assert_array_equal(flip_back_offsets(flip_back_offsets(offsets, FI), FI), offsets)
    kps = _poses(rng, 4, 17, 53, 40)
    np.testing.assert_allclose(flip_back_poses(flip_back_poses(kps, 53, FI), 53, FI), kps, atol=1e-12)
    np.testing.assert_allclose(flip_back_poses(flip_back_poses(kps, 53, COCO17, 0.5), 53, COCO17, 0.5), kps,
                               atol=1e-12)
    xy0 = rng.uniform(0, 30, (4, 2))
    boxes = np.concatenate([xy0, xy0 + rng.uniform(1, 20, (4, 2))], 1)
    np.testing.assert_allclose(flip_back_boxes(flip_back_boxes(boxes, 53), 53), boxes, atol=1e-12)
    assert (flip_back_boxes(boxes, 53)[:, 2] > flip_back_boxes(boxes, 53)[:, 0]).all()


def test_shift_semantics_on_a_small_example():
    row = torch.arange(5.0).view(1, 1, 1, 5)  # column j holds j
    assert flip_input(row).flatten().tolist() == [4, 3, 2, 1, 0]
    # mirrored, then moved 2 pixels left; the last 2 columns keep the mirrored values (DEKR's valid.py)
    assert flip_input(row, shift=2).flatten().tolist() == [2, 1, 0, 1, 0]
    # flipped back, then moved 1 pixel right; the first column is kept (HRNet's TEST.SHIFT_HEATMAP)
    assert flip_back_maps(row, shift=1).flatten().tolist() == [4, 4, 3, 2, 1]
    assert flip_back_maps(row.numpy(), shift=2).flatten().tolist() == [4, 3, 4, 3, 2]
    assert row.flatten().tolist() == [0, 1, 2, 3, 4]  # inputs are not modified

    maps = torch.randn(2, 17, 6, 8, generator=torch.Generator().manual_seed(0))
    hrnet = torch.flip(maps, [3])[:, FI]  # the official top-down flip-back, written out
    hrnet[:, :, :, 1:] = hrnet.clone()[:, :, :, 0:-1]
    assert torch.equal(flip_back_maps(maps, FI, shift=1), hrnet)
    for bad in (-1, 8, 1.5):
        with pytest.raises(ValueError, match="shift"):
            flip_back_maps(maps, FI, shift=bad)
    with pytest.raises(ValueError, match="shift"):
        flip_input(maps, shift=8)


def test_channels_are_swapped_by_the_flip_index(rng):
    k = CROWDPOSE14.num_keypoints
    maps = torch.arange(k + 1.0).view(1, k + 1, 1, 1).expand(2, k + 1, 3, 4).contiguous()  # channel c holds c
    with pytest.raises(ValueError, match="centre channel"):
        flip_back_maps(maps, CROWDPOSE14)
    out = flip_back_maps(maps, list(CROWDPOSE14.flip_index) + [k])  # the extra (centre) channel stays
    assert out[0, :, 0, 0].tolist() == list(CROWDPOSE14.flip_index) + [k]
    assert torch.equal(flip_back_maps(maps[:, :k], CROWDPOSE14), flip_back_maps(maps[:, :k], CROWDPOSE14.flip_index))
    assert pair_flip_index([1, 0, 2]) == [2, 3, 0, 1, 4, 5]
    kps = _poses(rng, 3, k, 30, 20)
    out = flip_back_poses(kps, 30, CROWDPOSE14)
    np.testing.assert_array_equal(out[:, :, 1:], kps[:, list(CROWDPOSE14.flip_index), 1:])  # y and scores follow
    with pytest.raises(ValueError, match="flip_index"):
        flip_back_poses(kps[:, :-1], 30, CROWDPOSE14)


def test_flip_back_agrees_with_a_mirrored_image(rng):
    """A dot drawn at each keypoint (one channel per keypoint): the mirrored input shows keypoint ``k`` of the
    mirrored person where :func:`flip_back_poses` puts it, and :func:`flip_back_maps` turns the ideal maps of the
    mirrored input back into the original's."""
    w, h, k = 64, 48, 17
    kps = _poses(rng, 1, k, w, h)
    kps[..., :2] = kps[..., :2].clip(6, (w - 7, h - 7))  # keep the dots whole
    maps = np.stack([dot_image(w, h, kps[0, j, :2])[..., 0] for j in range(k)])[None].astype(np.float32)
    mirrored_person = flip_back_poses(kps, w, FI)
    # what a perfect network says about the mirrored input: channel j shows the mirrored person's keypoint j
    seen = flip_input(torch.from_numpy(maps))[:, FI]
    for j in range(k):
        c = centroid(seen[0, j].numpy(), *mirrored_person[0, j, :2], radius=5)
        np.testing.assert_allclose(c, mirrored_person[0, j, :2], atol=0.05)
    assert torch.equal(flip_back_maps(seen, FI), torch.from_numpy(maps))
    # the same dot in a grid with pixel corners at integers (centres at +0.5): x -> W - x
    np.testing.assert_allclose(flip_back_poses(kps + [0.5, 0.5, 0], w, FI, pixel_centre=0.5),
                               mirrored_person + [0.5, 0.5, 0], atol=1e-12)
    np.testing.assert_allclose(flip_back_points(kps[0, :, :2], w), mirrored_person[0, FI, :2], atol=1e-12)


def test_flip_back_offsets_point_at_the_unmirrored_pose(rng):
    """Displacements ``location - offset = keypoint`` (DEKR's) of the mirrored person, flipped back, point at the
    original person from every location."""
    w, h = 9, 6
    pose = _poses(rng, 1, 17, w, h)[0, :, :2]
    mirrored = flip_back_poses(pose, w, FI)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    off = np.stack([c for p in mirrored for c in (xs - p[0], ys - p[1])])[None]  # (1, 2K, h, w)
    back = flip_back_offsets(off, FI)
    np.testing.assert_allclose(xs - back[0, 0::2], pose[:, 0, None, None] * np.ones((1, h, w)), atol=1e-12)
    np.testing.assert_allclose(ys - back[0, 1::2], pose[:, 1, None, None] * np.ones((1, h, w)), atol=1e-12)


def test_numpy_and_torch_agree(rng):
    maps = rng.normal(size=(2, 34, 5, 7)).astype(np.float32)
    for fn, args in [(flip_back_maps, (FI + FI, 0)), (flip_back_maps, (None, 2)), (flip_back_offsets, (FI, 1))]:
        a, b = fn(maps, *args), fn(torch.from_numpy(maps), *args)
        assert torch.is_tensor(b) and isinstance(a, np.ndarray) and b.dtype == torch.float32
        np.testing.assert_array_equal(a, b.numpy())
    kps = _poses(rng, 3, 17, 40, 30).astype(np.float32)
    for pc in (0.0, 0.5):
        a, b = flip_back_poses(kps, 40, FI, pc), flip_back_poses(torch.from_numpy(kps), 40, FI, pc)
        assert b.dtype == torch.float32 and a.dtype == np.float32
        np.testing.assert_array_equal(a, b.numpy())
        np.testing.assert_array_equal(flip_back_points(kps[:, 0], 40, pc),
                                      flip_back_points(torch.from_numpy(kps[:, 0]), 40, pc).numpy())
    boxes = np.array([[1, 2, 5, 9], [0, 0, 39, 29]])  # integers become float64 in both
    a, b = flip_back_boxes(boxes, 40), flip_back_boxes(torch.from_numpy(boxes), 40)
    assert a.dtype == np.float64 and b.dtype == torch.float64
    np.testing.assert_array_equal(a, [[34, 2, 38, 9], [0, 0, 39, 29]])
    np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_array_equal(flip_back_boxes(boxes, 40, pixel_centre=0.5), [[35, 2, 39, 9], [1, 0, 40, 29]])
