"""Bounded memory on any image: no forward pass of the test engine gets more than ``max_input_pixels`` network-input
pixels, whatever the image's aspect ratio, the scales or the number of person boxes (bupose.inference.tta and each
method's decoder). Extreme images are refused with a DataError before anything large is allocated, or processed
within the limit with their people inside the image."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from bupose.data.keypoints import COCO17, CROWDPOSE14
from bupose.errors import DataError
from bupose.inference.tta import DEFAULT_MAX_INPUT_PIXELS, TestTimeAugmentation
from bupose.methods.adaptive_pose.decode import AdaptivePoseDecoder, fit_resize, official_resize
from bupose.methods.dekr.decode import DEKRDecoder, dekr_resize, fit_input_size
from bupose.methods.topdown.boxes import PersonBoxes
from bupose.methods.topdown.decode import TopDownDecoder

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
SCALES = [0.5, 1.0, 2.0]
THIN = [(1, 4000), (4000, 1)]  # (h, w)


class Recorder(torch.nn.Module):
    """Wraps a model and records the shape of every input it gets."""

    def __init__(self, model):
        super().__init__()
        self.module, self.shapes = model, []  # "module": what the decoders' bind() looks through

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.module(x)

    def largest(self) -> int:
        return max(s[0] * s[2] * s[3] for s in self.shapes)


class NoForward(torch.nn.Module):
    def forward(self, x):
        raise AssertionError(f"the model was run on {tuple(x.shape)}")


def _dekr_decoder(**kw):
    return DEKRDecoder(CROWDPOSE14.flip_index, input_size=512, nms_dist=0.05, nms_num=7, **kw)


def _adaptive_decoder(**kw):
    return AdaptivePoseDecoder(flip_index=CROWDPOSE14.flip_index, sigmas=CROWDPOSE14.sigmas, input_size=512, **kw)


@pytest.mark.parametrize("make", [_dekr_decoder, _adaptive_decoder], ids=["dekr", "adaptive_pose"])
@pytest.mark.parametrize("hw", THIN, ids=["1x4000", "4000x1"])
def test_thin_image_is_refused_before_any_forward_pass(make, hw):
    """The official resize makes a 1-pixel-thin image 4000 times longer than its short side: GBs at scale 2 (DEKR
    tried 4.2 GB, AdaptivePose 28.8 GB). The error names the image, the scale and the limit, and comes first."""
    image = np.zeros((*hw, 3), np.uint8)
    with pytest.raises(DataError, match=rf"image {hw[1]}x{hw[0]} .* scale 2 .* limit of {DEFAULT_MAX_INPUT_PIXELS}"):
        TestTimeAugmentation(SCALES, flip=True)(NoForward(), make(max_input_pixels=DEFAULT_MAX_INPUT_PIXELS), image)


def test_dekr_fits_the_input_size_and_leaves_normal_images_alone():
    assert fit_input_size((480, 640), 512, 2.0, DEFAULT_MAX_INPUT_PIXELS) == 512  # 1408 x 1024: the official size
    assert fit_input_size((640, 300), 512, 2.0, DEFAULT_MAX_INPUT_PIXELS) == 512
    size = fit_input_size((100, 4000), 512, 2.0, DEFAULT_MAX_INPUT_PIXELS)  # official: 40960 x 1024 at scale 2
    w, h = dekr_resize((100, 4000), size, 2.0)[0]
    assert size % 64 == 0 and w * h <= DEFAULT_MAX_INPUT_PIXELS
    assert dekr_resize((100, 4000), size + 64, 2.0)[0][0] * (size + 64) * 2 > DEFAULT_MAX_INPUT_PIXELS  # the largest


def test_adaptive_pose_fits_each_pass_and_leaves_normal_images_alone():
    m, size = fit_resize((640, 480), 512, 2.0, DEFAULT_MAX_INPUT_PIXELS)
    m0, size0 = official_resize((640, 480), 512, 2.0)
    assert size == size0 and np.array_equal(m, m0)
    m, size = fit_resize((4000, 100), 512, 2.0, DEFAULT_MAX_INPUT_PIXELS)
    assert size[0] * size[1] <= DEFAULT_MAX_INPUT_PIXELS
    corners = np.array([[-0.5, -0.5], [3999.5, 99.5]]) @ m[:, :2].T + m[:, 2]  # the image lies inside the canvas
    assert (corners >= 0).all() and (corners <= size).all()


def load_dekr_tiny():
    from bupose.methods.dekr.convert import load_official
    from bupose.methods.dekr.model import build_dekr

    tiny = torch.load(REPO / "tests/fixtures/dekr_tiny_official.pt", weights_only=False)
    model = build_dekr(tiny["spec"], 14).eval()
    load_official(model, tiny["state_dict"])
    return model


def build_adaptive_tiny():
    from bupose.methods.adaptive_pose.model import build_adaptive_pose

    torch.manual_seed(0)
    stages = {"NUM_STAGES": 3, "NUM_MODULES": [1, 1, 1], "NUM_BRANCHES": [2, 3, 4], "BLOCK": ["BASIC"] * 3,
              "NUM_BLOCKS": [[1] * 2, [1] * 3, [1] * 4], "NUM_CHANNELS": [[4, 8], [4, 8, 16], [4, 8, 16, 32]],
              "FUSE_METHOD": ["SUM"] * 3}
    return build_adaptive_pose({"STAGES": stages, "STEM_BLOCKS": 1, "HEAD_CHANNELS": 8, "PART_CHANNELS": 4},
                               CROWDPOSE14).eval()


@pytest.fixture(scope="module")
def dekr_tiny():
    return load_dekr_tiny()


@pytest.fixture(scope="module")
def adaptive_tiny():
    return build_adaptive_tiny()


@pytest.mark.parametrize("name", ["dekr", "adaptive_pose"])
def test_long_image_runs_within_the_limit_with_exact_sizes(name, dekr_tiny, adaptive_tiny):
    """A 900 x 60 strip with a limit of 2^19 input pixels: the official scale-2 pass at input size 128 (DEKR
    3840 x 256) does not fit; every pass stays under the limit, people come back finite."""
    limit = 2 ** 19
    model = Recorder(dekr_tiny if name == "dekr" else adaptive_tiny)
    if name == "dekr":
        dec = DEKRDecoder(CROWDPOSE14.flip_index, input_size=128, max_input_pixels=limit)
    else:
        dec = AdaptivePoseDecoder(flip_index=CROWDPOSE14.flip_index, sigmas=CROWDPOSE14.sigmas, input_size=128,
                                  max_input_pixels=limit)
    image = np.random.default_rng(0).integers(0, 256, (60, 900, 3), dtype=np.uint8)
    people = TestTimeAugmentation(SCALES, flip=True)(model, dec, image)
    assert len(model.shapes) == 6 and model.largest() <= limit
    assert np.isfinite(people.keypoints).all()
    if name == "dekr":  # all scales share one fitted input size (64), with the official rule
        assert {s[2:] for s in model.shapes} == {dekr_resize(image.shape, 64, s)[0][::-1] for s in SCALES}


@pytest.mark.parametrize("hw", THIN, ids=["1x4000", "4000x1"])
@pytest.mark.parametrize("official", [False, "detect", "test"])
def test_yolo_pose_thin_image_gives_people_inside_the_image(hw, official):
    from bupose.methods.yolo_pose.decode import YOLOPoseDecoder
    from bupose.methods.yolo_pose.model import YOLOPose

    torch.manual_seed(0)
    model = Recorder(YOLOPose(width_multiple=0.02, depth_multiple=0.33).eval())
    dec = YOLOPoseDecoder(torch.zeros(4, 3, 2), [8, 16, 32, 64], COCO17.flip_index, COCO17.sigmas, input_size=128,
                          official_coordinates=official, max_people=20)  # anchors and strides: bind() takes the model's
    image = np.full((*hw, 3), 128, np.uint8)
    people = TestTimeAugmentation(SCALES, flip=True)(model, dec, image)
    assert model.largest() == 256 * 256  # the letterbox square at scale 2
    lo, hi = (0.0, 0.0) if official else (-0.5, -0.5), (hw[1], hw[0]) if official else (hw[1] - 0.5, hw[0] - 0.5)
    kp = people.keypoints[..., :2]
    assert len(people) > 0 and (kp >= lo).all() and (kp <= hi).all()


def test_yolo_pose_letterbox_side_is_capped():
    from bupose.methods.yolo_pose.decode import YOLOPoseDecoder

    dec = YOLOPoseDecoder(torch.zeros(4, 3, 2), [8, 16, 32, 64], COCO17.flip_index, COCO17.sigmas, input_size=960,
                          max_input_pixels=2 ** 22)
    assert dec.letterbox_side(1.0) == 960 and dec.letterbox_side(2.0) == 1920  # within 2048^2 = 2^22
    assert dec.letterbox_side(3.0) == 2048  # 2880 capped


class PerSampleHeatmaps(torch.nn.Module):
    """A crop's heatmaps depend on that crop only (so chunks give the same outputs as one batch)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        hm = torch.zeros(x.shape[0], 17, 16, 12)
        hm[:, :, 8, 6] = 0.5 + x.mean((1, 2, 3))[:, None]
        return {"heatmaps": hm}


def test_topdown_runs_many_boxes_in_chunks_under_the_limit():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    xy = rng.uniform(0, 100, (10, 2))
    boxes = PersonBoxes(np.concatenate([xy, rng.uniform(10, 50, (10, 2))], 1), rng.uniform(0.5, 1, 10))

    def run(limit):
        model = PerSampleHeatmaps()
        dec = TopDownDecoder(flip_index=COCO17.flip_index, sigmas=COCO17.sigmas, input_size=(48, 64),
                             heatmap_size=(12, 16), post_process=False, oks_thre=2.0, max_input_pixels=limit)
        return TestTimeAugmentation([1.0], flip=True)(model, dec, image, boxes=boxes), model.calls

    whole, calls = run(DEFAULT_MAX_INPUT_PIXELS)
    assert calls == [10, 10]
    chunked, calls = run(3 * 48 * 64)  # three crops per pass
    assert calls == [3, 3, 3, 1] * 2
    np.testing.assert_array_equal(chunked.keypoints, whole.keypoints)
    np.testing.assert_array_equal(chunked.scores, whole.scores)
    with pytest.raises(DataError, match="48x64 pixels is over the limit of 100"):
        run(100)


PROBE = """
import json, resource, sys
import numpy as np, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from bupose.errors import DataError
from bupose.inference.tta import TestTimeAugmentation
import test_reliability_memory as T
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))  # a runaway allocation fails here, not on the machine
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {{}}
for name, make in [("dekr", T._dekr_decoder), ("adaptive_pose", T._adaptive_decoder)]:
    model = T.load_dekr_tiny() if name == "dekr" else T.build_adaptive_tiny()
    for h, w in T.THIN:
        try:
            TestTimeAugmentation([0.5, 1.0, 2.0], flip=True)(model, make(), np.zeros((h, w, 3), np.uint8))
            out[f"{{name}} {{w}}x{{h}}"] = "people"
        except DataError:
            out[f"{{name}} {{w}}x{{h}}"] = "DataError"
        except MemoryError:
            out[f"{{name}} {{w}}x{{h}}"] = "MemoryError"
out["peak_rss_growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps(out))
"""


def test_thin_images_in_a_memory_capped_process():
    """The DEKR and AdaptivePose tiny models on 1x4000 and 4000x1 images with scales 0.5, 1, 2 + flip in a process
    capped at 4 GiB of address space: refused with a DataError, the peak RSS barely grows (before the limit the
    official resize allocated GBs and failed)."""
    code = PROBE.format(tests=str(REPO / "tests"), cap=4 * 2 ** 30)
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert {k: v for k, v in out.items() if k != "peak_rss_growth_mib"} == {
        "dekr 4000x1": "DataError", "dekr 1x4000": "DataError", "adaptive_pose 4000x1": "DataError",
        "adaptive_pose 1x4000": "DataError"}
    assert out["peak_rss_growth_mib"] < 200


@pytest.mark.parametrize("cfg_file", ["experiments/synthetic/dekr_tiny_256.yaml",
                                      "experiments/synthetic/adaptive_pose_tiny_256.yaml",
                                      "experiments/synthetic/yolo_pose_tiny_320.yaml",
                                      "experiments/synthetic/topdown_hrnet_simple_128x96.yaml"])
def test_the_config_limit_reaches_every_decoder(cfg_file):
    from bupose.config import load_config
    from bupose.methods import build_method

    cfg = load_config(REPO / cfg_file, ["TEST.MAX_INPUT_PIXELS", "123456", "TEST.OFFICIAL_COORDINATES", "True",
                                        "TEST.OFFICIAL_PATH", "detect"])
    decoder = build_method(cfg).decoder()
    assert decoder.max_input_pixels == 123456
    if hasattr(decoder, "official_coordinates"):
        assert decoder.official_coordinates == "detect"
