"""bupose.data.geometry: matrices, their inverses, and that pixels and points move together."""
import math

import cv2
import numpy as np
import pytest

from bupose.data import geometry as G
from bupose.data.keypoints import COCO17, CROWDPOSE14


# ---------------------------------------------------------------------------------------------------------------
# helpers shared with test_pipelines (imported there)
# ---------------------------------------------------------------------------------------------------------------
def dot_image(width, height, points, sigma=1.5, peak=250.0):
    """A black BGR image with a small Gaussian dot centred (sub-pixel) on each ``(x, y)`` of ``points``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width), np.float64)
    for x, y in np.asarray(points, np.float64).reshape(-1, 2):
        x0, x1 = int(max(0, math.floor(x - 5 * sigma))), int(min(width, math.ceil(x + 5 * sigma) + 1))
        y0, y1 = int(max(0, math.floor(y - 5 * sigma))), int(min(height, math.ceil(y + 5 * sigma) + 1))
        img[y0:y1, x0:x1] += peak * np.exp(-((xs[y0:y1, x0:x1] - x) ** 2 + (ys[y0:y1, x0:x1] - y) ** 2)
                                            / (2 * sigma ** 2))
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2)


def centroid(image, x, y, radius, background=0.0):
    """Intensity-weighted centroid of ``image`` (channel 0) in a window of ``radius`` around ``(x, y)``."""
    ch = image[..., 0] if image.ndim == 3 else image
    h, w = ch.shape
    x0, x1 = max(0, int(math.floor(x - radius))), min(w, int(math.ceil(x + radius)) + 1)
    y0, y1 = max(0, int(math.floor(y - radius))), min(h, int(math.ceil(y + radius)) + 1)
    win = np.clip(ch[y0:y1, x0:x1].astype(np.float64) - background, 0, None)
    mass = win.sum()
    assert mass > 50, f"no dot found near ({x:.1f}, {y:.1f})"
    ys, xs = np.mgrid[y0:y1, x0:x1]
    return np.array([(xs * win).sum() / mass, (ys * win).sum() / mass])


def random_affine(rng, scale=(0.5, 2.0)):
    return G.compose(G.rotation_matrix(rng.uniform(-180, 180), center=rng.uniform(0, 300, 2),
                                       scale=rng.uniform(*scale)),
                     G.shear_matrix(rng.uniform(-20, 20), rng.uniform(-20, 20)),
                     G.translation_matrix(*rng.uniform(-100, 100, 2)))


# ---------------------------------------------------------------------------------------------------------------
# matrices
# ---------------------------------------------------------------------------------------------------------------
def test_compose_applies_in_order():
    t, s = G.translation_matrix(10, 0), G.scale_matrix(2)
    p = np.array([[1.0, 1.0]])
    np.testing.assert_allclose(G.warp_points(p, G.compose(t, s)), [[22.0, 2.0]])  # translate, then scale
    np.testing.assert_allclose(G.warp_points(p, G.compose(s, t)), [[12.0, 2.0]])
    np.testing.assert_allclose(G.compose(), G.identity())


def test_as_matrix_accepts_3x3_and_rejects_bad_shapes():
    np.testing.assert_allclose(G.as_matrix(np.eye(3)), G.identity())
    with pytest.raises(ValueError, match="shape"):
        G.as_matrix(np.eye(2))
    with pytest.raises(ValueError, match="affine"):
        G.as_matrix([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
    with pytest.raises(ValueError, match="singular"):
        G.invert([[1, 2, 0], [2, 4, 0]])


def test_random_affines_invert_exactly(rng):
    for _ in range(20):
        m = random_affine(rng)
        pts = rng.uniform(-500, 1500, (7, 17, 2))
        back = G.warp_points(G.warp_points(pts, m), G.invert(m))
        np.testing.assert_allclose(back, pts, atol=1e-3)
        np.testing.assert_allclose(G.compose(m, G.invert(m)), G.identity(), atol=1e-9)


def test_keypoints_float32_round_trip_and_visibility_kept(rng):
    kps = np.concatenate([rng.uniform(0, 1000, (5, 17, 2)), rng.integers(0, 3, (5, 17, 1))], -1).astype(np.float32)
    m = random_affine(rng)
    w = G.warp_keypoints(kps, m)
    assert w.dtype == np.float32 and w.shape == kps.shape
    np.testing.assert_array_equal(w[..., 2], kps[..., 2])
    np.testing.assert_allclose(G.warp_keypoints(w, G.invert(m)), kps, atol=1e-3)


def test_rotation_matches_opencv():
    for angle, c, s in [(30, (100, 50), 1.0), (-75, (3.5, 7.25), 1.7), (180, (0, 0), 0.5)]:
        np.testing.assert_allclose(G.rotation_matrix(angle, c, s), cv2.getRotationMatrix2D(c, angle, s), atol=1e-12)
    # positive angle: a point right of the centre moves up on screen (counter-clockwise as displayed)
    np.testing.assert_allclose(G.warp_points(np.array([1.0, 0.0]), G.rotation_matrix(90)), [0.0, -1.0], atol=1e-12)


def test_crop_matrix_udp_maps_pixel_centres_to_pixel_centres():
    w, h, out = 640, 480, 512
    m = G.crop_matrix(((w - 1) / 2, (h - 1) / 2), max(w, h), out, mode="udp")
    np.testing.assert_allclose(G.warp_points(np.array([[0, 239.5], [w - 1, 239.5], [319.5, 239.5]]), m),
                               [[0, 255.5], [out - 1, 255.5], [255.5, 255.5]], atol=1e-9)
    assert m[0, 0] == pytest.approx((out - 1) / (w - 1))
    a = G.crop_matrix(((w - 1) / 2, (h - 1) / 2), w, out, mode="area")  # image area -> output area
    np.testing.assert_allclose(G.warp_points(np.array([[-0.5, 0], [w - 0.5, 0]]), a)[:, 0], [-0.5, out - 0.5])
    # rotation is about the centre, translation in output pixels
    r = G.crop_matrix((100.0, 80.0), 200, 256, rotation=30, translate=(5, -3))
    np.testing.assert_allclose(G.warp_points(np.array([100.0, 80.0]), r), [127.5 + 5, 127.5 - 3])
    with pytest.raises(ValueError, match="mode"):
        G.crop_matrix((0, 0), 10, 10, mode="bilinear")


def test_udp_crop_round_trip(rng):
    for _ in range(10):
        w, h = rng.integers(100, 1500, 2)
        m = G.crop_matrix(((w - 1) / 2, (h - 1) / 2), max(w, h) * rng.uniform(0.75, 1.5), 512,
                          rotation=rng.uniform(-30, 30), translate=rng.uniform(-40, 40, 2), mode="udp")
        kps = np.concatenate([rng.uniform(0, w, (3, 17, 1)), rng.uniform(0, h, (3, 17, 1)), np.ones((3, 17, 1))], -1)
        np.testing.assert_allclose(G.warp_keypoints(G.warp_keypoints(kps, m), G.invert(m)), kps, atol=1e-3)


def test_crop_matrix_commutes_with_flip():
    # unbiased centre: cropping a flipped image == flipping the crop (no half-pixel drift)
    w, h, out = 333, 250, 128
    for mode in G.MODES:
        m = G.crop_matrix(((w - 1) / 2, (h - 1) / 2), 400, out, mode=mode)
        np.testing.assert_allclose(G.compose(G.flip_matrix(w), m), G.compose(m, G.flip_matrix(out)), atol=1e-9)


def test_resize_area_matches_cv2_resize(rng):
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for dst in [(80, 60), (120, 90)]:
        m = G.resize_matrix((40, 30), dst, mode="area")
        ours = G.warp_image(img, m, dst, border_mode=cv2.BORDER_REPLICATE).astype(int)
        theirs = cv2.resize(img, dst, interpolation=cv2.INTER_LINEAR).astype(int)
        assert np.abs(ours - theirs).max() <= 1
    u = G.resize_matrix((40, 30), (80, 60), mode="udp")
    np.testing.assert_allclose(G.warp_points(np.array([[0, 0], [39, 29]]), u), [[0, 0], [79, 59]])


def test_stride_matrix_area_and_udp():
    m = G.stride_matrix(4)
    np.testing.assert_allclose(G.warp_points(np.array([[1.5, 5.5], [509.5, 0]]), m), [[0, 1], [127, -0.375]])
    # a flip of the input is a flip of the heatmap
    np.testing.assert_allclose(G.compose(G.flip_matrix(512), m), G.compose(m, G.flip_matrix(128)), atol=1e-12)
    u = G.stride_matrix(4, "udp", input_size=(512, 384))
    np.testing.assert_allclose(G.warp_points(np.array([[0, 0], [511, 383]]), u), [[0, 0], [127, 95]])
    np.testing.assert_allclose(G.compose(G.flip_matrix(512), u), G.compose(u, G.flip_matrix(128)), atol=1e-12)
    with pytest.raises(ValueError, match="input_size"):
        G.stride_matrix(4, "udp")
    with pytest.raises(ValueError, match="multiple"):
        G.stride_matrix(4, "udp", input_size=(510, 384))


@pytest.mark.parametrize("src", [(640, 480), (480, 640), (1000, 333), (17, 900), (640, 640)])
@pytest.mark.parametrize("auto", [False, True])
def test_letterbox_matrix_sizes_and_centring(src, auto):
    m, (ow, oh) = G.letterbox_matrix(src, 640, stride=32, auto=auto)
    assert ow % 32 == 0 and oh % 32 == 0
    if not auto:
        assert (ow, oh) == (640, 640)
    r = m[0, 0]
    assert r == pytest.approx(min(640 / src[0], 640 / src[1]))
    (x0, y0), (x1, y1) = G.warp_points(np.array([[-0.5, -0.5], [src[0] - 0.5, src[1] - 0.5]]), m)
    assert x0 >= -0.5 - 1e-9 and y0 >= -0.5 - 1e-9 and x1 <= ow - 0.5 + 1e-9 and y1 <= oh - 0.5 + 1e-9
    assert abs((x0 + 0.5) - (ow - 0.5 - x1)) <= 1.0 + 1e-9  # centred to within a pixel
    assert abs((y0 + 0.5) - (oh - 0.5 - y1)) <= 1.0 + 1e-9
    no_up, _ = G.letterbox_matrix((100, 50), 640, scaleup=False)
    assert no_up[0, 0] == 1.0
    with pytest.raises(ValueError, match="multiple"):
        G.letterbox_matrix(src, 650)


# ---------------------------------------------------------------------------------------------------------------
# points, keypoints, boxes
# ---------------------------------------------------------------------------------------------------------------
def test_inside_and_visibility_zeroing():
    pts = np.array([[-0.5, 0], [-0.51, 0], [99.5, 49.5], [99.51, 0], [0, 49.6], [50, 25]])
    np.testing.assert_array_equal(G.inside(pts, (100, 50)), [True, False, True, False, False, True])
    kps = np.concatenate([pts, np.full((6, 1), 2.0)], 1)[None]
    kps[0, 5, 2] = 1
    out = G.warp_keypoints(kps, G.identity(), size=(100, 50))
    np.testing.assert_array_equal(out[0, :, 2], [2, 0, 2, 0, 0, 1])
    np.testing.assert_array_equal(out[..., :2], kps[..., :2])  # coordinates kept


def test_warp_and_clip_boxes():
    boxes = np.array([[10, 20, 30, 60], [-5, -5, 200, 5]], np.float32)
    np.testing.assert_allclose(G.warp_boxes(boxes, G.compose(G.scale_matrix(2), G.translation_matrix(1, 1))),
                               [[21, 41, 61, 121], [-9, -9, 401, 11]])
    r = G.warp_boxes(boxes[:1], G.rotation_matrix(90, center=(20, 40)))  # 20x40 box turns into 40x20
    np.testing.assert_allclose(r, [[0, 30, 40, 50]], atol=1e-9)
    np.testing.assert_allclose(G.clip_boxes(boxes, (100, 50)), [[10, 20, 30, 49.5], [-0.5, -0.5, 99.5, 5]])
    assert G.warp_boxes(np.zeros((0, 4)), G.identity()).shape == (0, 4)


def test_boxes_from_keypoints():
    kps = np.zeros((3, 4, 3), np.float32)
    kps[0] = [[10, 20, 2], [30, 5, 1], [100, 100, 0], [15, 40, 2]]
    kps[1] = [[1, 2, 0], [3, 4, 0], [5, 6, 0], [7, 8, 0]]  # nothing labelled
    kps[2] = [[50, 50, 2]] * 4
    np.testing.assert_allclose(G.boxes_from_keypoints(kps), [[10, 5, 30, 40], [0, 0, 0, 0], [50, 50, 50, 50]])
    np.testing.assert_allclose(G.boxes_from_keypoints(kps[:1], margin=0.1), [[8, 1.5, 32, 43.5]])
    assert G.boxes_from_keypoints(np.zeros((0, 4, 3))).shape == (0, 4)


# ---------------------------------------------------------------------------------------------------------------
# flip
# ---------------------------------------------------------------------------------------------------------------
def test_flip_twice_is_identity(rng):
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    np.testing.assert_array_equal(G.hflip_image(G.hflip_image(img)), img)
    kps = np.concatenate([rng.uniform(0, 53, (4, 17, 2)), rng.integers(0, 3, (4, 17, 1))], -1)
    np.testing.assert_allclose(G.hflip_keypoints(G.hflip_keypoints(kps, 53, COCO17), 53, COCO17), kps)
    xy0 = rng.uniform(0, 30, (4, 2))
    boxes = np.concatenate([xy0, xy0 + rng.uniform(1, 20, (4, 2))], 1)
    np.testing.assert_allclose(G.hflip_boxes(G.hflip_boxes(boxes, 53), 53), boxes)
    fb = G.hflip_boxes(boxes, 53)
    assert (fb[:, 2] >= fb[:, 0]).all()
    np.testing.assert_allclose(G.compose(G.flip_matrix(53), G.flip_matrix(53)), G.identity())


def test_flip_matrix_is_the_array_flip(rng):
    img = rng.integers(0, 256, (20, 31, 3), dtype=np.uint8)
    np.testing.assert_array_equal(G.warp_image(img, G.flip_matrix(31), (31, 20)), G.hflip_image(img))
    dot = dot_image(31, 20, [(7.3, 9.6)])
    c = centroid(G.hflip_image(dot), 30 - 7.3, 9.6, 6)
    np.testing.assert_allclose(c, [30 - 7.3, 9.6], atol=0.05)
    np.testing.assert_allclose(G.hflip_points(np.array([[7.3, 9.6]]), 31), [[30 - 7.3, 9.6]])


@pytest.mark.parametrize("spec", [COCO17, CROWDPOSE14], ids=lambda s: s.name)
def test_flip_swaps_left_and_right_by_flip_index(spec):
    k = spec.num_keypoints
    kps = np.zeros((1, k, 3))
    kps[0, :, 0] = np.arange(k) * 3.0 + 1  # each keypoint identifiable by its x
    kps[0, :, 1] = np.arange(k)
    kps[0, :, 2] = 2
    out = G.hflip_keypoints(kps, 100, spec)
    for i, name in enumerate(spec.names):
        partner = (name.replace("left", "right") if name.startswith("left") else
                   name.replace("right", "left") if name.startswith("right") else name)
        j = spec.index(partner)
        assert spec.flip_index[i] == j
        # the new "left_x" is the mirrored old "right_x"
        np.testing.assert_allclose(out[0, i], [100 - 1 - kps[0, j, 0], kps[0, j, 1], 2])
    np.testing.assert_allclose(G.swap_keypoints(kps, spec.flip_index), kps[:, list(spec.flip_index)])
    with pytest.raises(ValueError, match="flip_index"):
        G.swap_keypoints(np.zeros((1, k + 1, 3)), spec)


# ---------------------------------------------------------------------------------------------------------------
# images and masks move with the points
# ---------------------------------------------------------------------------------------------------------------
def test_dots_land_on_warped_points(rng):
    w, h = 160, 120
    pts = np.array([[30.3, 25.7], [80.0, 60.0], [120.6, 90.2], [45.5, 95.25]])
    img = dot_image(w, h, pts, sigma=2.0)
    for _ in range(5):
        m = G.compose(G.rotation_matrix(rng.uniform(-180, 180), center=(80, 60), scale=rng.uniform(0.8, 1.6)),
                      G.translation_matrix(*rng.uniform(-10, 10, 2)))
        if rng.random() < 0.5:
            m = G.compose(m, G.flip_matrix(w))
        out = G.warp_image(img, m, (w, h))
        for p, q in zip(pts, G.warp_points(pts, m)):
            if 8 < q[0] < w - 8 and 8 < q[1] < h - 8:
                np.testing.assert_allclose(centroid(out, *q, radius=8), q, atol=0.2)


def test_antialias_does_not_move_dots():
    pts = np.array([[100.3, 80.6], [300.7, 200.2]])
    img = dot_image(400, 300, pts, sigma=3.0)
    m = G.resize_matrix((400, 300), (100, 75))
    assert G.antialias_sigma(m) == pytest.approx(1.5)
    out = G.warp_image(img, m, (100, 75), antialias=True)
    for q in G.warp_points(pts, m):
        np.testing.assert_allclose(centroid(out, *q, radius=5), q, atol=0.15)
    assert G.antialias_sigma(G.scale_matrix(0.9)) == 0.0


def test_mask_rectangle_moves_with_its_corners(rng):
    mask = np.zeros((120, 160), np.uint8)
    x0, y0, x1, y1 = 40, 30, 99, 69  # inclusive pixel ranges
    mask[y0:y1 + 1, x0:x1 + 1] = 1
    corners = np.array([[x0 - .5, y0 - .5], [x1 + .5, y0 - .5], [x1 + .5, y1 + .5], [x0 - .5, y1 + .5]])
    for _ in range(5):
        m = G.compose(G.rotation_matrix(rng.uniform(-90, 90), center=(80, 60), scale=rng.uniform(0.5, 1.5)),
                      G.translation_matrix(*rng.uniform(-10, 10, 2)))
        out = G.warp_mask(mask, m, (160, 120))
        assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}
        poly = G.warp_points(corners, m).astype(np.float32)
        ys, xs = np.mgrid[0:120, 0:160]
        dist = np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), True)
                         for x, y in zip(xs.ravel(), ys.ravel())]).reshape(120, 160)
        assert (out[dist > 1.0] == 1).all()
        assert (out[dist < -1.0] == 0).all()
    soft = G.warp_mask(mask, G.scale_matrix(0.5), (80, 60), threshold=None)
    assert soft.dtype == np.float32 and 0 < soft.mean() < 1
    assert G.warp_mask(mask.astype(bool), G.identity(), (160, 120)).dtype == bool
