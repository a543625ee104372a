"""bupose.data.pipelines: images, keypoints, boxes and masks leave every pipeline aligned."""
import cv2
import numpy as np
import pytest
import torch

from bupose.data import geometry as G
from bupose.data.keypoints import COCO17, CROWDPOSE14
from bupose.data.pipelines import (BottomUpAffine, Letterbox, LetterboxTrain, Photometric, Resized, TestResize,
                                   denormalize, letterbox, to_image_coords, to_tensor)
from bupose.data.sample import Sample
from bupose.errors import ConfigError, DataError

from test_geometry import centroid, dot_image


def make_people(rng, width, height, n, k, grid=None, margin=0.1):
    """``n`` people (or a ``grid`` of them), keypoints spread inside each person's box, all labelled."""
    boxes, kps = [], []
    if grid is not None:
        gx, gy = grid
        cells = [(i, j) for j in range(gy) for i in range(gx)]
        for i, j in cells:
            cw, ch = width / gx, height / gy
            boxes.append([i * cw + margin * cw, j * ch + margin * ch, (i + 1) * cw - margin * cw - 1,
                          (j + 1) * ch - margin * ch - 1])
    else:
        for _ in range(n):
            bw, bh = rng.uniform(0.1, 0.3) * width, rng.uniform(0.2, 0.5) * height
            x0, y0 = rng.uniform(0, width - bw - 1), rng.uniform(0, height - bh - 1)
            boxes.append([x0, y0, x0 + bw, y0 + bh])
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    for b in boxes:
        xy = np.stack([rng.uniform(b[0], b[2], k), rng.uniform(b[1], b[3], k)], 1)
        kps.append(np.concatenate([xy, np.full((k, 1), 2.0)], 1))
    kps = np.array(kps, np.float32).reshape(-1, k, 3)
    return kps, boxes


def make_sample(rng, width=320, height=240, n=3, spec=COCO17, image=None, grid=None):
    kps, boxes = make_people(rng, width, height, n, spec.num_keypoints, grid=grid)
    if image is None:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Sample(image=image, keypoints=kps, boxes=boxes, ignore_mask=np.zeros((height, width), np.uint8))


def assert_dots_on_keypoints(image, kps, src_kps_index=None, radius=6.0, atol=0.5, border=8):
    """Every visible keypoint away from the border has its dot's centroid on it; returns how many were checked."""
    h, w = image.shape[:2]
    n = 0
    for p in range(kps.shape[0]):
        for k in range(kps.shape[1]):
            x, y, v = kps[p, k]
            if v > 0 and border < x < w - border and border < y < h - border:
                np.testing.assert_allclose(centroid(image, x, y, radius), (x, y), atol=atol)
                n += 1
    return n


def sparse_keypoints(spec, centers, spread=30.0):
    """One person per centre, keypoints on a small circle around it (dots far apart from each other)."""
    k = spec.num_keypoints
    ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
    kps = np.zeros((len(centers), k, 3), np.float32)
    for i, (cx, cy) in enumerate(centers):
        r = spread * (1 + 0.3 * np.arange(k) / k)
        kps[i, :, 0], kps[i, :, 1], kps[i, :, 2] = cx + r * np.cos(ang), cy + r * np.sin(ang), 2
    return kps


# ---------------------------------------------------------------------------------------------------------------
# BottomUpAffine
# ---------------------------------------------------------------------------------------------------------------
def test_bottom_up_outputs_and_inverse(rng):
    t = BottomUpAffine(COCO17, input_size=512, output_stride=4)
    sample = make_sample(rng, 640, 427, n=5)
    for _ in range(10):
        out = t(sample, rng)
        assert out["image"].shape == (512, 512, 3) and out["image"].dtype == np.uint8
        assert out["keypoints"].shape == (5, 17, 3) and out["keypoints"].dtype == np.float32
        assert out["mask"].shape == (128, 128) and out["mask"].dtype == np.float32
        assert out["boxes"].shape == (5, 4) and out["areas"].shape == (5,)
        assert out["matrix"].shape == (2, 3)
        kps = out["keypoints"]
        if out["flipped"]:
            kps = G.swap_keypoints(kps, COCO17)
        back = G.warp_points(kps[..., :2], G.invert(out["matrix"]))
        np.testing.assert_allclose(back, sample.keypoints[..., :2], atol=1e-3)
        np.testing.assert_allclose(out["output_matrix"], G.compose(out["matrix"], G.stride_matrix(4)))
        # v = 0 exactly where the keypoint left the input
        vis = G.inside(G.warp_points(sample.keypoints[..., :2], out["matrix"]), 512)
        if out["flipped"]:
            vis = vis[:, list(COCO17.flip_index)]
        np.testing.assert_array_equal(out["keypoints"][..., 2] > 0, vis)


def test_bottom_up_keypoints_outside_crop_get_v0(rng):
    sample = make_sample(rng, 400, 300, n=1)
    sample.keypoints[0, :4, :2] = [[2, 2], [397, 2], [2, 297], [397, 297]]  # image corners
    sample.keypoints[0, 4:, :2] = [200, 150]  # the centre
    t = BottomUpAffine(COCO17, input_size=256, min_scale=0.5, max_scale=0.5, max_rotation=0, max_translate=0,
                       flip_prob=0)
    out = t(sample, rng)  # zoomed in 2x around the centre: corners fall outside
    assert (out["keypoints"][0, :4, 2] == 0).all()
    assert (out["keypoints"][0, 4:, 2] == 2).all()


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_bottom_up_dots_land_on_keypoints(rng, flip_prob):
    w, h = 400, 300
    kps = sparse_keypoints(COCO17, [(110, 100), (290, 200)], spread=60)
    img = dot_image(w, h, kps[..., :2], sigma=1.5)
    sample = Sample(image=img, keypoints=kps, boxes=G.boxes_from_keypoints(kps), ignore_mask=np.zeros((h, w),
                                                                                                       np.uint8))
    t = BottomUpAffine(COCO17, input_size=512, max_rotation=30, min_scale=0.75, max_scale=1.25, flip_prob=flip_prob)
    checked = 0
    for _ in range(4):
        out = t(sample, rng)
        assert out["flipped"] == bool(flip_prob)
        checked += assert_dots_on_keypoints(out["image"], out["keypoints"])
    assert checked > 50


@pytest.mark.parametrize("spec", [COCO17, CROWDPOSE14], ids=lambda s: s.name)
def test_bottom_up_flip_swaps_left_right(spec, rng):
    sample = make_sample(rng, 300, 300, n=2, spec=spec)
    keep = BottomUpAffine(spec, input_size=256, max_rotation=0, max_translate=0, min_scale=1, max_scale=1,
                          flip_prob=0.0)(sample, rng)
    flip = BottomUpAffine(spec, input_size=256, max_rotation=0, max_translate=0, min_scale=1, max_scale=1,
                          flip_prob=1.0)(sample, rng)
    ls, rs = spec.index("left_shoulder"), spec.index("right_shoulder")
    # the flipped image's left shoulder is the mirror of the unflipped right shoulder, and vice versa
    np.testing.assert_allclose(flip["keypoints"][:, ls, 0], 255 - keep["keypoints"][:, rs, 0], atol=1e-3)
    np.testing.assert_allclose(flip["keypoints"][:, rs, 0], 255 - keep["keypoints"][:, ls, 0], atol=1e-3)
    np.testing.assert_allclose(flip["keypoints"],
                               G.hflip_keypoints(keep["keypoints"], 256, spec.flip_index), atol=1e-3)
    # the same pixels, up to OpenCV's fixed-point rounding of the interpolation weights
    assert np.abs(flip["image"].astype(int) - G.hflip_image(keep["image"]).astype(int)).max() <= 1


def test_bottom_up_ignore_mask_moves_with_image(rng):
    w, h = 400, 300
    sample = make_sample(rng, w, h, n=2)
    x0, y0, x1, y1 = 150, 100, 259, 189
    sample.ignore_mask[y0:y1 + 1, x0:x1 + 1] = 1
    corners = np.array([[x0 - .5, y0 - .5], [x1 + .5, y0 - .5], [x1 + .5, y1 + .5], [x0 - .5, y1 + .5]])
    t = BottomUpAffine(COCO17, input_size=512, output_stride=4)
    o = t.output_size
    ys, xs = np.mgrid[0:o, 0:o]
    for _ in range(4):
        out = t(sample, rng)
        mask = out["mask"]
        assert set(np.unique(mask)) == {0.0, 1.0}  # 1 = use, 0 = ignore
        poly = G.warp_points(corners, out["output_matrix"]).astype(np.float32)
        dist = np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), True)
                         for x, y in zip(xs.ravel(), ys.ravel())]).reshape(o, o)
        assert (mask[dist > 1.0] == 0).all()
        assert (mask[dist < -1.0] == 1).all()  # padding outside the image is used by default
    pad = BottomUpAffine(COCO17, input_size=256, train=False, ignore_padding=True)(make_sample(rng, 200, 100), rng)
    assert pad["mask"][0, 0] == 0 and pad["mask"][32, 32] == 1  # a wide image: the top rows are padding


def test_bottom_up_validation_is_deterministic_whole_image(rng):
    sample = make_sample(rng, 640, 480, n=4)
    t = BottomUpAffine(COCO17, input_size=512, train=False)
    a, b = t(sample, np.random.default_rng(1)), t(sample, np.random.default_rng(2))
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
    assert not a["flipped"]
    np.testing.assert_allclose(G.warp_points(np.array([[319.5, 239.5], [0, 239.5], [639, 239.5]]), a["matrix"]),
                               [[255.5, 255.5], [0, 255.5], [511, 255.5]], atol=1e-9)
    assert (a["keypoints"][..., 2] == 2).all()  # the whole image is kept


def test_bottom_up_rejects_bad_input(rng):
    with pytest.raises(ConfigError, match="output_stride"):
        BottomUpAffine(COCO17, input_size=510, output_stride=4)
    t = BottomUpAffine(COCO17)
    bad = make_sample(rng, 100, 80, n=2, spec=CROWDPOSE14)
    with pytest.raises(DataError, match="keypoints"):
        t(bad, rng)
    gray = make_sample(rng, 100, 80, n=1)
    gray.image = gray.image[..., 0]
    with pytest.raises(DataError, match="uint8"):
        t(gray, rng)


# ---------------------------------------------------------------------------------------------------------------
# Letterbox / TestResize
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(640, 480), (333, 500), (1280, 720), (50, 61)])
def test_letterbox_sizes_dots_and_inverse(size, rng):
    w, h = size
    pts = np.array([[0.3 * w, 0.4 * h], [0.7 * w, 0.6 * h]])
    img = dot_image(w, h, pts, sigma=max(1.5, 0.004 * max(w, h)))
    for input_size, auto in [(640, False), (960, False), (640, True)]:
        out, m = letterbox(img, input_size, stride=32, auto=auto, pad_value=0)
        assert out.shape[0] % 32 == 0 and out.shape[1] % 32 == 0
        if not auto:
            assert out.shape[:2] == (input_size, input_size)
        q = G.warp_points(pts, m)
        for p in q:
            np.testing.assert_allclose(centroid(out, *p, radius=12), p, atol=0.5)
        np.testing.assert_allclose(to_image_coords(q, m), pts, atol=1e-9)
    empty = Sample(image=img, keypoints=np.zeros((0, 17, 3), np.float32), boxes=np.zeros((0, 4), np.float32),
                   ignore_mask=np.zeros((h, w), np.uint8))
    assert Letterbox(640)(empty)["keypoints"].shape == (0, 17, 3)
    res = Letterbox(960)(img)
    assert isinstance(res, Resized) and res.image.shape == (960, 960, 3)
    np.testing.assert_allclose(G.compose(res.matrix, res.inverse), G.identity(), atol=1e-12)


def test_letterbox_on_a_sample(rng):
    sample = make_sample(rng, 500, 300, n=3)
    sample.ignore_mask[:50, :100] = 1
    out = Letterbox(640)(sample)
    assert out["image"].shape == (640, 640, 3) and out["mask"].shape == (640, 640)
    np.testing.assert_allclose(G.warp_keypoints(out["keypoints"], out["inverse"]), sample.keypoints, atol=1e-3)
    top = out["matrix"][1, 2]
    assert out["mask"][int(top) + 10, 10] == 0 and out["mask"][int(top) + 200, 300] == 1 and out["mask"][0, 0] == 1


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_test_resize_short_side_stride_dots_and_inverse(scale, rng):
    w, h = 500, 333
    pts = np.array([[100.3, 80.7], [401.2, 250.1], [250.0, 166.0]])
    img = dot_image(w, h, pts, sigma=3.0)
    t = TestResize(512, stride=32)
    res = t(img, scale=scale)
    image, matrix, inverse = res  # unpacks as a triple
    r = matrix[0, 0]
    assert round(h * r) == round(512 * scale)  # the short side
    assert image.shape[0] % 32 == 0 and image.shape[1] % 32 == 0
    assert image.shape[1] >= round(w * r) and image.shape[0] >= round(h * r)
    q = G.warp_points(pts, matrix)
    for p in q:
        np.testing.assert_allclose(centroid(image, *p, radius=6 * max(1, scale)), p, atol=0.5)
    # exact inverse, from input pixels and from heatmap pixels of a stride-4 network
    np.testing.assert_allclose(G.warp_points(q, inverse), pts, atol=1e-9)
    kps = np.concatenate([rng.uniform(0, w, (4, 17, 1)), rng.uniform(0, h, (4, 17, 1)), np.ones((4, 17, 1))], -1)
    heat = G.warp_keypoints(kps, res.output_matrix(4))
    np.testing.assert_allclose(to_image_coords(heat, matrix, output_stride=4), kps, atol=1e-3)
    np.testing.assert_allclose(res.to_image_coords(heat, output_stride=4), kps, atol=1e-3)
    np.testing.assert_allclose(heat[..., :2], (G.warp_points(kps[..., :2], matrix) - 1.5) / 4, atol=1e-9)
    udp = G.warp_keypoints(kps, res.output_matrix(4, "udp"))
    np.testing.assert_allclose(res.to_image_coords(udp, output_stride=4, stride_mode="udp"), kps, atol=1e-3)
    # a dot drawn on the image lands on the heatmap coordinate when the image is warped to heatmap resolution
    hw, hh = image.shape[1] // 4, image.shape[0] // 4
    small = G.warp_image(img, res.output_matrix(4), (hw, hh), antialias=True)
    for p in G.warp_points(pts, res.output_matrix(4)):
        np.testing.assert_allclose(centroid(small, *p, radius=5), p, atol=0.5)


def test_test_resize_is_not_collected_and_validates():
    assert TestResize.__test__ is False
    with pytest.raises(ConfigError):
        TestResize(512, stride=0)
    with pytest.raises(DataError):
        TestResize(512)(np.zeros((10, 10), np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# LetterboxTrain
# ---------------------------------------------------------------------------------------------------------------
def test_letterbox_train_single_dots_flip_and_inverse(rng):
    w, h = 480, 360
    kps = sparse_keypoints(COCO17, [(140, 120), (330, 230)], spread=30)
    img = dot_image(w, h, kps[..., :2], sigma=2.0)
    sample = Sample(image=img, keypoints=kps, boxes=G.boxes_from_keypoints(kps, margin=0.1),
                    ignore_mask=np.zeros((h, w), np.uint8))
    t = LetterboxTrain(COCO17, input_size=640, mosaic_prob=0.0, degrees=20, translate=0.05, scale=0.3,
                       shear=5, flip_prob=0.5, pad_value=0)
    checked, flips = 0, set()
    for _ in range(6):
        out = t(sample, rng)
        assert out["image"].shape == (640, 640, 3) and not out["mosaic"]
        flips.add(out["flipped"])
        k = out["keypoints"]
        assert len(k) == 2
        checked += assert_dots_on_keypoints(out["image"], k)
        back = G.warp_points((G.swap_keypoints(k, COCO17) if out["flipped"] else k)[..., :2],
                             G.invert(out["matrix"]))
        np.testing.assert_allclose(back, kps[..., :2], atol=1e-3)
    assert flips == {True, False} and checked > 40


def test_letterbox_train_ignore_mask_moves(rng):
    w, h = 400, 300
    sample = make_sample(rng, w, h, n=2)
    x0, y0, x1, y1 = 100, 60, 219, 159
    sample.ignore_mask[y0:y1 + 1, x0:x1 + 1] = 1
    corners = np.array([[x0 - .5, y0 - .5], [x1 + .5, y0 - .5], [x1 + .5, y1 + .5], [x0 - .5, y1 + .5]])
    t = LetterboxTrain(COCO17, input_size=256, mosaic_prob=0.0, degrees=30, scale=0.3)
    ys, xs = np.mgrid[0:256, 0:256]
    for _ in range(3):
        out = t(sample, rng)
        poly = G.warp_points(corners, out["matrix"]).astype(np.float32)
        dist = np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), True)
                         for x, y in zip(xs.ravel()[::3], ys.ravel()[::3])])
        m = out["mask"].ravel()[::3]
        assert (m[dist > 1.0] == 0).all() and (m[dist < -1.0] == 1).all()


def test_mosaic_has_people_from_all_four_inside_their_boxes(rng):
    s = 640
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    sizes = [(640, 480), (500, 500), (300, 420), (800, 450)]
    samples = []
    for (w, h), c in zip(sizes, colours):
        img = np.empty((h, w, 3), np.uint8)
        img[:] = c
        samples.append(make_sample(rng, w, h, spec=COCO17, image=img, grid=(4, 4)))
    t = LetterboxTrain(COCO17, input_size=s, mosaic_prob=1.0, degrees=0, translate=0, scale=0, flip_prob=0)
    exercised = n_colour = 0
    for seed in range(12):
        out = t(samples, np.random.default_rng(seed))
        assert out["mosaic"] and out["matrix"] is None and len(out["matrices"]) == 4
        k, b, src, idx = out["keypoints"], out["boxes"], out["source_index"], out["person_index"]
        assert len(k) == len(b) == len(src) == len(idx) == len(out["areas"])
        # every kept person's visible keypoints are inside its box and show its own image's colour
        for p in range(len(k)):
            vis = k[p, :, 2] > 0
            pts = k[p, vis, :2]
            assert (pts[:, 0] >= b[p, 0] - 1e-3).all() and (pts[:, 0] <= b[p, 2] + 1e-3).all()
            assert (pts[:, 1] >= b[p, 1] - 1e-3).all() and (pts[:, 1] <= b[p, 3] + 1e-3).all()
            for x, y in pts:  # (no affine: output pixels are canvas pixels, so the nearest pixel is in the tile)
                xi, yi = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
                if 0 <= xi < s and 0 <= yi < s:
                    assert tuple(out["image"][yi, xi]) == colours[src[p]]
                    n_colour += 1
            # and they are the source person's keypoints, moved by that source's matrix
            np.testing.assert_allclose(pts, G.warp_points(samples[src[p]].keypoints[idx[p], vis, :2],
                                                          out["matrices"][src[p]]), atol=1e-3)
        assert (b[:, 2] - b[:, 0] > 2).all() and (b[:, 3] - b[:, 1] > 2).all()
        assert (b >= -0.5).all() and (b <= s - 0.5).all()
        # the mosaic centre, read off the bottom-right image's matrix (no affine: output = canvas - s/2)
        cx, cy = G.warp_points(np.array([-0.5, -0.5]), out["matrices"][3]) + 0.5
        if min(cx, cy, s - cx, s - cy) >= s / 4:
            assert set(src.tolist()) == {0, 1, 2, 3}
            exercised += 1
    assert exercised >= 3 and n_colour > 1000


def test_mosaic_random_affine_keeps_people_and_keypoints_consistent(rng):
    samples = [make_sample(rng, int(rng.integers(200, 700)), int(rng.integers(200, 700)), n=6) for _ in range(4)]
    for i, smp in enumerate(samples):
        smp.ignore_mask[:20, :20] = 1
    t = LetterboxTrain(COCO17, input_size=320, mosaic_prob=1.0, degrees=15, translate=0.1, scale=0.5, shear=3,
                       flip_prob=0.5)
    for _ in range(6):
        out = t(samples, rng)
        assert out["image"].shape == (320, 320, 3) and out["mask"].shape == (320, 320)
        assert out["mask"].dtype == np.float32 and set(np.unique(out["mask"])) <= {0.0, 1.0}
        k, b = out["keypoints"], out["boxes"]
        for p in range(len(k)):
            vis = k[p, :, 2] > 0
            assert G.inside(k[p, vis], 320).all()
            assert (k[p, vis, 0] >= b[p, 0] - 1e-3).all() and (k[p, vis, 0] <= b[p, 2] + 1e-3).all()
            assert (k[p, vis, 1] >= b[p, 1] - 1e-3).all() and (k[p, vis, 1] <= b[p, 3] + 1e-3).all()
            kk = G.swap_keypoints(k[p], COCO17) if out["flipped"] else k[p]
            src = samples[out["source_index"][p]].keypoints[out["person_index"][p]]
            np.testing.assert_allclose(G.warp_points(kk[:, :2], G.invert(out["matrices"][out["source_index"][p]])),
                                       src[:, :2], atol=1e-3)


def test_mosaic_needs_four_samples(rng):
    t = LetterboxTrain(COCO17, input_size=320, mosaic_prob=1.0)
    assert t.num_samples == 4
    with pytest.raises(DataError, match="4 samples"):
        t([make_sample(rng)], rng)
    single = LetterboxTrain(COCO17, input_size=320, mosaic_prob=0.0)
    assert single.num_samples == 1 and single(make_sample(rng), rng)["matrix"] is not None


def test_letterbox_train_drops_tiny_people_with_their_keypoints(rng):
    sample = make_sample(rng, 400, 400, n=0)
    kps, boxes = make_people(rng, 400, 400, 0, 17, grid=(2, 2))
    boxes[1] = [200, 0, 200.5, 150]  # 0.5 px wide, 0.4 px after scaling by 320 / 400: dropped
    kps[1, :, 0] = 200.2
    sample = Sample(image=sample.image, keypoints=kps, boxes=boxes, ignore_mask=sample.ignore_mask)
    out = LetterboxTrain(COCO17, input_size=320, mosaic_prob=0.0, translate=0, scale=0, flip_prob=0)(sample, rng)
    assert out["person_index"].tolist() == [0, 2, 3]
    assert len(out["keypoints"]) == len(out["boxes"]) == 3


# ---------------------------------------------------------------------------------------------------------------
# Photometric
# ---------------------------------------------------------------------------------------------------------------
def test_photometric_reproducible_and_geometry_untouched(rng):
    pts = np.array([[60.4, 40.3], [150.7, 100.2]])
    img = dot_image(200, 150, pts, sigma=2.5)
    img[..., 1] = (img[..., 1] * 0.6).astype(np.uint8)  # some colour for HSV to act on
    ph = Photometric(color_prob=1.0, blur_prob=1.0, noise_prob=0.0, gray_prob=0.0)
    a = ph(img, rng=np.random.default_rng(7))
    b = Photometric(color_prob=1.0, blur_prob=1.0, noise_prob=0.0, gray_prob=0.0)(img, rng=np.random.default_rng(7))
    c = ph(img, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert a.shape == img.shape and a.dtype == np.uint8
    assert not np.array_equal(a, c) and not np.array_equal(a, img)
    for out in (a, c):
        bg = float(np.median(out[..., 0]))
        for p in pts:
            np.testing.assert_allclose(centroid(out, *p, radius=8, background=bg), p, atol=0.3)
    # seeded instances without an rng are reproducible too
    np.testing.assert_array_equal(Photometric(seed=3, noise_prob=1.0)(img), Photometric(seed=3, noise_prob=1.0)(img))
    # on a dict, only the image changes
    sample = {"image": img, "keypoints": np.ones((2, 17, 3)), "mask": np.ones((10, 10), np.float32)}
    out = ph(sample, rng=1)
    assert out["keypoints"] is sample["keypoints"] and out["mask"] is sample["mask"]
    assert out["image"].shape == img.shape and sample["image"] is img


# ---------------------------------------------------------------------------------------------------------------
# tensors
# ---------------------------------------------------------------------------------------------------------------
def test_to_tensor_and_denormalize_round_trip(rng):
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    t = to_tensor(img)
    assert t.shape == (3, 48, 64) and t.dtype == torch.float32
    r, g, b = img[5, 7, 2], img[5, 7, 1], img[5, 7, 0]  # BGR -> RGB
    np.testing.assert_allclose(t[:, 5, 7].numpy(), [(r / 255 - .485) / .229, (g / 255 - .456) / .224,
                                                    (b / 255 - .406) / .225], rtol=1e-5)
    np.testing.assert_array_equal(denormalize(t), img)
    batch = np.stack([img, img[::-1]])
    tb = to_tensor(batch)
    assert tb.shape == (2, 3, 48, 64)
    np.testing.assert_array_equal(denormalize(tb), batch)
    with pytest.raises(DataError):
        to_tensor(img.astype(np.float32))


def test_samples_without_people(rng):
    empty = [Sample(image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), keypoints=np.zeros((0, 17, 3), np.float32),
                    boxes=np.zeros((0, 4), np.float32), ignore_mask=np.zeros((h, w), np.uint8))
             for w, h in [(300, 200), (200, 300), (256, 256), (640, 100)]]
    out = BottomUpAffine(COCO17, input_size=256)(empty[0], rng)
    assert out["keypoints"].shape == (0, 17, 3) and out["boxes"].shape == (0, 4) and out["areas"].shape == (0,)
    out = LetterboxTrain(COCO17, input_size=256)(empty, rng)
    assert out["keypoints"].shape == (0, 17, 3) and out["boxes"].shape == (0, 4)
    assert out["source_index"].shape == (0,) and out["mask"].min() == 1.0


# ---------------------------------------------------------------------------------------------------------------
# HSV (YOLO-style gains)
# ---------------------------------------------------------------------------------------------------------------
from bupose.data.pipelines import HSV  # noqa: E402


def _hsv_image(h, s, v, shape=(8, 10)):
    hsv = np.empty(shape + (3,), np.uint8)
    hsv[...] = (h, s, v)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def test_hsv_zero_gains_is_identity(rng):
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    g = np.random.default_rng(5)
    out = HSV(hgain=0, sgain=0, vgain=0)(img, g)
    np.testing.assert_array_equal(out, img)
    assert out is not img
    assert g.random() == np.random.default_rng(5).random()  # nothing drawn


def test_hsv_seeded_and_input_untouched(rng):
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    keep = img.copy()
    a = HSV()(img, np.random.default_rng(3))
    b = HSV()(img, np.random.default_rng(3))
    c = HSV()(img, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, img)
    np.testing.assert_array_equal(img, keep)
    np.testing.assert_array_equal(HSV(seed=9)(img), HSV(seed=9)(img))
    out = HSV()({"image": img, "keypoints": 1}, 3)
    np.testing.assert_array_equal(out["image"], a)
    assert out["keypoints"] == 1


def test_hsv_tables():
    scale, shift = HSV(hue_mode="scale"), HSV(hue_mode="shift")
    hue, sat, val = scale.tables([1.015, 1.5, 0.5])
    assert hue[100] == 101 and hue[179] == 1  # int(179 * 1.015 % 180): wraps around 180
    assert sat[100] == 150 and sat[200] == 255 and val[201] == 100  # scaled, clipped, truncated
    hue, _, _ = shift.tables([1 + 10 / 180, 1, 1])
    assert hue[10] == 20 and hue[175] == 5
    hue, _, _ = shift.tables([1 - 10 / 180, 1, 1])
    assert hue[3] == 173
    for t in scale.tables([1, 1, 1]):
        np.testing.assert_array_equal(t[:180], np.arange(180))


def test_hsv_hue_wraps_on_images():
    img = _hsv_image(175, 255, 255)
    seed = next(s for s in range(100) if np.random.default_rng(s).uniform(-1, 1, 3)[0] > 0.3)
    shift = np.random.default_rng(seed).uniform(-1, 1, 3)[0] * 0.5 * 180  # > 27 degrees of OpenCV hue
    out = HSV(hgain=0.5, sgain=0, vgain=0, hue_mode="shift")(img, np.random.default_rng(seed))
    h = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)[..., 0]
    expected = int((175 + shift) % 180)
    assert expected < 90 and np.abs(h.astype(int) - expected).max() <= 1
    # YOLOv5's multiplicative hue gain wraps the same way
    seed = next(s for s in range(100) if np.random.default_rng(s).uniform(-1, 1, 3)[0] > 0.5)
    gain = 1 + np.random.default_rng(seed).uniform(-1, 1, 3)[0] * 0.1
    out = HSV(hgain=0.1, sgain=0, vgain=0)(img, np.random.default_rng(seed))
    h = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)[..., 0]
    assert np.abs(h.astype(int) - int(175 * gain % 180)).max() <= 1 and h.max() < 15  # 175 * 1.1 = 192.5


def test_hsv_value_gain_range():
    grey = _hsv_image(0, 0, 100)
    vals = [int(cv2.cvtColor(HSV(hgain=0, sgain=0, vgain=0.4)(grey, s), cv2.COLOR_BGR2HSV)[0, 0, 2])
            for s in range(40)]
    assert 60 <= min(vals) < 80 and 120 < max(vals) <= 140


def test_hsv_bad_arguments(rng):
    with pytest.raises(ConfigError, match="sgain"):
        HSV(sgain=-1)
    with pytest.raises(ConfigError, match="hue_mode"):
        HSV(hue_mode="rotate")
    with pytest.raises(DataError, match="HSV"):
        HSV()(np.zeros((4, 4), np.uint8), rng)
