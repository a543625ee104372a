"""Datasets in the Ultralytics YOLO-pose label format (Jocher et al., Ultralytics YOLO; the format of YOLO-Pose,
Maji et al., CVPRW 2022), read into the same :class:`~bupose.data.sample.Sample` as the COCO-format readers.

The format: a data YAML file ::

    path: ../datasets/my-pose    # dataset root; train / val / test are relative to it
    train: images/train          # a folder of images, a .txt file listing images, or a list of those
    val: images/val
    kpt_shape: [17, 3]           # K keypoints, 2 (x, y) or 3 (x, y, visibility) numbers each
    flip_idx: [0, 2, 1, 4, 3, ...]
    names: {0: person}
    kpt_oks_sigmas: [...]        # optional, K positive numbers
    kpt_names: {0: [nose, ...]}  # optional (a plain list of K names is accepted too)
    skeleton: [[15, 13], ...]    # optional, 0-based pairs (a bupose extension; other tools ignore the key)

and one text file per image, found by replacing the last ``images`` folder of the image path with ``labels`` and the
extension with ``.txt`` (``.../images/val/a.jpg`` -> ``.../labels/val/a.txt``), one row per object::

    cls cx cy w h x1 y1 [v1] ... xK yK [vK]

all coordinates normalised to ``[0, 1]`` by the image width and height.

Conventions and choices:

* **Pixels.** ``x_pixel = x * W``, ``y_pixel = y * H``, the plain scaling Ultralytics' COCO converter uses, so COCO
  keypoints survive a round trip exactly. Images are decoded with their EXIF orientation *applied* (as
  ``cv2.imread`` does in Ultralytics, whose labels refer to the oriented image); this differs on purpose from the
  COCO readers, whose annotations refer to the stored pixel grid. ``W, H`` are the oriented image's size.
* **Visibility.** With ``kpt_shape [K, 3]`` it must be 0, 1 or 2 (COCO's meaning); unlabelled points get
  coordinates 0. With ``[K, 2]`` a point is unlabelled (v = 0) where a coordinate is negative (Ultralytics' rule)
  or where it is exactly ``(0, 0)`` (what converters write for a missing point; Ultralytics would count it as
  labelled); every other point gets v = 2.
* **People and ignored rows.** Rows with at least one labelled keypoint are people. Rows without any (Ultralytics'
  COCO labels contain them: people with ``num_keypoints == 0``) are ignored as in the COCO readers: their box is
  painted into ``Sample.ignore_mask`` and they get ``num_keypoints: 0`` in :meth:`YoloPoseDataset.coco_gt`. The
  class index is checked against ``names`` but not otherwise used: every row is a person. Exact duplicate rows are
  dropped with a warning, as Ultralytics does.
* **Areas.** ``Sample.areas`` and the ``area`` of :meth:`~YoloPoseDataset.coco_gt` are ``area_factor * w * h`` of
  the box, ``area_factor = 0.53`` by default: the OKS scale that Ultralytics' pose validator uses for these labels
  (and CrowdPose's evaluator for box-only files). Pass ``area_factor=1.0`` for the plain box area.
* **OKS sigmas.** ``kpt_oks_sigmas`` when given (as in Ultralytics); else the COCO sigmas when the layout is
  COCO-17 (K = 17, ``flip_idx`` equal to COCO's and ``kpt_names``, if given, COCO's); else ``1 / K`` for every
  keypoint, Ultralytics' default for other layouts. (Ultralytics uses the COCO sigmas for every ``kpt_shape [17, 3]``
  and ``1 / K`` for ``[17, 2]``; here the layout, not the number of values per point, decides.) Keypoint names are
  ``kpt_names`` or COCO's for the COCO layout, else ``kp0 .. kp{K-1}``. When names, flip index and sigmas (and the
  skeleton, if given) equal those of a built-in layout, :attr:`YoloPoseDataset.spec` *is* that layout (``COCO17``,
  ``CROWDPOSE14``), so everything keyed on the layout name works; other layouts are named ``yolo:<yaml stem>``.
* **Paths.** A relative ``path`` is taken from the YAML file's folder (Ultralytics tries the working directory and
  its own datasets folder); without ``path`` the YAML's folder is the root. Relative lines of an image-list ``.txt``
  are taken from the ``.txt`` file's folder. Images are listed recursively and sorted, like Ultralytics.
* **Image ids.** ``int(stem)`` of every image when all stems are decimal numbers and distinct (COCO's
  ``000000000139.jpg`` -> 139), else the 1-based position in the sorted list. Annotation ids count rows from 1
  over the split, in image order.
* **Images without a label file** have no people (allowed, as in Ultralytics). A split where no label file and no
  labels folder exists at all is an error (most likely a wrong layout).
* **Bad data.** :class:`~bupose.errors.DataError` naming the file and line. The YAML file and the image listing
  always raise. Label rows are validated at construction: ``5 + K * ndim`` values, finite numbers, an integer class
  in ``0 .. len(names) - 1``, coordinates within ``[-0.01, 1.01]`` (Ultralytics' 1 % tolerance), visibility in
  {0, 1, 2}. Images are read lazily in ``__getitem__`` with the checks of
  :func:`~bupose.data.io.read_image`. ``on_error="skip"`` drops an image with a bad label file at
  construction and, at ``__getitem__``, returns the next usable image instead of an unreadable one, exactly as
  :class:`~bupose.data.coco_format.CocoKeypointDataset` does.

:func:`write_yolo_pose` writes a COCO-format keypoint file in this format (the other direction).
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from PIL import Image

from ..errors import DataError
from .io import ImageAnnotations, SkippingIndex, ignore_mask, load_coco_json, read_image
from .keypoints import COCO17, CROWDPOSE14, KeypointSpec, get_spec
from .sample import Sample

logger = logging.getLogger("bupose.data")

#: Image file suffixes that are listed from a folder or an image-list file (those Ultralytics lists).
IMG_FORMATS = frozenset({"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm", "heic"})
#: How far outside ``[0, 1]`` a normalised value may lie (Ultralytics' check).
COORD_TOLERANCE = 0.01
#: Default OKS scale factor on the box area (Ultralytics' pose validator, CrowdPose's evaluator).
BOX_AREA_FACTOR = 0.53
_KNOWN_SPECS = (COCO17, CROWDPOSE14)
_EXIF_ORIENTATION = 274


# --- the data YAML ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class YoloDataConfig:
    """A parsed, validated data YAML.

    Attributes:
        yaml_file: the YAML file.
        root: the dataset root (``path`` resolved; see the module docstring).
        splits: raw split entries (``train``, ``val``, ...): a string or a list of strings.
        num_keypoints, ndim: ``kpt_shape``.
        class_names: ``names`` as ``{index: name}`` (empty when the file has none).
        spec: the keypoint layout.
    """

    yaml_file: Path
    root: Path
    splits: dict[str, Any]
    num_keypoints: int
    ndim: int
    class_names: dict[int, str]
    spec: KeypointSpec


_NON_SPLIT_KEYS = {"path", "kpt_shape", "flip_idx", "names", "nc", "kpt_oks_sigmas", "kpt_names", "skeleton",
                   "download", "yaml_file", "channels"}


def load_data_yaml(data_yaml: str | Path) -> YoloDataConfig:
    """Read and validate an Ultralytics pose data YAML (see the module docstring). Raises :class:`DataError`
    naming the file and the key."""
    if data_yaml is None:
        raise DataError("dataset 'yolo' needs the path of its data YAML file (DATASET.ROOT)")
    yaml_file = Path(data_yaml)
    if yaml_file.is_dir():
        found = sorted(p.name for p in yaml_file.glob("*.y*ml"))
        raise DataError(f"{yaml_file} is a folder; a YOLO-pose dataset is given by its data YAML file (for dataset "
                        f"'yolo', DATASET.ROOT is that file)" + (f"; found here: {', '.join(found)}" if found else ""))
    if not yaml_file.is_file():
        raise DataError(f"data YAML not found: {yaml_file}")
    try:
        data = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{yaml_file}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{yaml_file}: expected a mapping with keys path, train, val, kpt_shape, flip_idx, names; "
                        f"got a {type(data).__name__}")
    where = str(yaml_file)
    if "kpt_shape" not in data:
        raise DataError(f"{where}: missing key 'kpt_shape' ([number of keypoints, 2 or 3]); is this a pose dataset?")
    shape = data["kpt_shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) != 2 or not all(_is_int(v) for v in shape)
            or shape[0] < 1 or shape[1] not in (2, 3)):
        raise DataError(f"{where}: 'kpt_shape' is {shape!r}, expected [K, 2] or [K, 3] with K >= 1 keypoints")
    k, ndim = int(shape[0]), int(shape[1])

    root_value = data.get("path")
    if root_value in (None, ""):
        root = yaml_file.parent
    elif isinstance(root_value, str):
        root = Path(root_value).expanduser()
        root = root if root.is_absolute() else yaml_file.parent / root
    else:
        raise DataError(f"{where}: 'path' is {root_value!r}, expected the dataset root folder as a string")
    root = Path(os.path.abspath(root))

    class_names = _class_names(data, where)
    splits = {key: v for key, v in data.items() if key not in _NON_SPLIT_KEYS}
    spec = _build_spec(data, k, yaml_file)
    return YoloDataConfig(yaml_file, root, splits, k, ndim, class_names, spec)


def yolo_spec(data_yaml: str | Path) -> KeypointSpec:
    """The keypoint layout of a data YAML (see the module docstring for names, sigmas and built-in layouts)."""
    return load_data_yaml(data_yaml).spec


def yolo_dataset_files(data_yaml: str | Path, split: str, check: bool = True) -> tuple[Path, Path]:
    """``(data YAML, the split's image folder or list file)`` (the dataset root when the split lists several);
    what :func:`bupose.data.build.dataset_files` returns for ``yolo``."""
    config = load_data_yaml(data_yaml)
    sources = split_sources(config, split, check=check)
    return config.yaml_file, sources[0] if len(sources) == 1 else config.root


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _class_names(data: dict, where: str) -> dict[int, str]:
    names = data.get("names")
    if names is None:
        nc = data.get("nc")
        if nc is None:
            return {}
        if not _is_int(nc) or nc < 1:
            raise DataError(f"{where}: 'nc' is {nc!r}, expected a positive integer")
        return {i: f"class{i}" for i in range(nc)}
    if isinstance(names, (list, tuple)):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict) and all(_is_int(i) or (isinstance(i, str) and i.isdecimal()) for i in names):
        out = {int(i): str(n) for i, n in names.items()}
        if sorted(out) != list(range(len(out))):
            raise DataError(f"{where}: 'names' has class indices {sorted(out)}, expected 0 .. {len(out) - 1}")
        return out
    raise DataError(f"{where}: 'names' is {names!r}, expected a list of class names or a mapping index -> name")


def _build_spec(data: dict, k: int, yaml_file: Path) -> KeypointSpec:
    where = str(yaml_file)
    flip = data.get("flip_idx")
    if flip is None:
        raise DataError(f"{where}: missing key 'flip_idx' (for each keypoint, the index of its mirror partner in a "
                        f"horizontally flipped image; bupose flips during training and testing). Write "
                        f"flip_idx: {list(range(k))} if no keypoint has a left/right partner")
    if not isinstance(flip, (list, tuple)) or len(flip) != k or not all(_is_int(v) for v in flip):
        raise DataError(f"{where}: 'flip_idx' is {flip!r}, expected {k} integers (one per keypoint, kpt_shape[0])")
    flip = tuple(int(v) for v in flip)
    for i, j in enumerate(flip):
        if not 0 <= j < k:
            raise DataError(f"{where}: 'flip_idx'[{i}] is {j}, expected an index in 0 .. {k - 1}")
    for i, j in enumerate(flip):
        if flip[j] != i:
            raise DataError(f"{where}: 'flip_idx' is not an involution: flip_idx[{i}] = {j} but flip_idx[{j}] = "
                            f"{flip[j]} (a keypoint and its mirror partner must name each other)")

    names = data.get("kpt_names")
    if names is not None:
        if isinstance(names, dict) and names:
            names = names.get(0, names.get("0", next(iter(names.values()))))
        if not isinstance(names, (list, tuple)) or len(names) != k or not all(isinstance(n, str) for n in names):
            raise DataError(f"{where}: 'kpt_names' is {data['kpt_names']!r}, expected {k} names (a list, or a "
                            f"mapping class index -> list)")
        names = tuple(names)

    sigmas = data.get("kpt_oks_sigmas")
    if sigmas is not None:
        arr = np.asarray(sigmas, dtype=object).reshape(-1) if isinstance(sigmas, (list, tuple)) else None
        if (arr is None or arr.size != k
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
                           for s in arr)):
            raise DataError(f"{where}: 'kpt_oks_sigmas' is {sigmas!r}, expected {k} positive numbers")
        sigmas = tuple(float(s) for s in arr)

    skeleton = data.get("skeleton")
    if skeleton is not None:
        if not isinstance(skeleton, (list, tuple)) or not all(
                isinstance(e, (list, tuple)) and len(e) == 2 and all(_is_int(v) and 0 <= v < k for v in e)
                for e in skeleton):
            raise DataError(f"{where}: 'skeleton' is {skeleton!r}, expected pairs [a, b] of 0-based keypoint "
                            f"indices in 0 .. {k - 1}")
        skeleton = tuple((int(a), int(b)) for a, b in skeleton)

    coco_layout = k == 17 and flip == COCO17.flip_index and names in (None, COCO17.names)
    if coco_layout:
        names, skeleton = COCO17.names, skeleton if skeleton is not None else COCO17.skeleton
        sigmas = sigmas if sigmas is not None else COCO17.sigmas
    else:
        names = names if names is not None else tuple(f"kp{i}" for i in range(k))
        sigmas = sigmas if sigmas is not None else (1.0 / k,) * k
        skeleton = skeleton if skeleton is not None else ()
    for known in _KNOWN_SPECS:
        if (names == known.names and flip == known.flip_index and np.allclose(sigmas, known.sigmas, rtol=1e-9, atol=0)
                and (data.get("skeleton") is None or skeleton == known.skeleton)):
            return known
    return KeypointSpec(name=f"yolo:{yaml_file.stem}", names=names, flip_index=flip, sigmas=sigmas,
                        skeleton=skeleton)


# --- files -----------------------------------------------------------------------------------------------------
def label_path(image_path: str | Path) -> Path:
    """The label file of an image: the last ``images`` folder of the path becomes ``labels``, the extension
    ``.txt`` (Ultralytics' rule); without an ``images`` folder the label file lies next to the image."""
    p = Path(image_path)
    parts = list(p.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _abs(p: Path) -> Path:
    return Path(os.path.abspath(p))  # absolute and normalised, symbolic links kept (the label rule needs them)


def split_sources(config: YoloDataConfig, split: str, check: bool = True) -> list[Path]:
    """The folders / image-list files that ``split`` names, as absolute paths. Raises :class:`DataError` when the
    YAML has no such split or, with ``check``, when one of them does not exist."""
    where = str(config.yaml_file)
    if split not in config.splits:
        known = [s for s, v in config.splits.items() if v and isinstance(v, (str, list))]
        raise DataError(f"{where}: no split {split!r} (missing key {split!r}); splits in the file: {known}")
    value = config.splits[split]
    entries = value if isinstance(value, (list, tuple)) else [value]
    if not entries or not all(isinstance(e, str) and e for e in entries):
        raise DataError(f"{where}: split {split!r} is {value!r}, expected a folder of images, a .txt file listing "
                        f"images, or a list of those (relative to {config.root})")
    sources = []
    for entry in entries:
        p = Path(entry).expanduser()
        p = _abs(p if p.is_absolute() else config.root / p)
        if check and not p.exists():
            raise DataError(f"{where}: split {split!r}: images folder or list file not found at {p} ({entry!r} "
                            f"relative to the dataset root {config.root})")
        sources.append(p)
    return sources


def split_image_files(config: YoloDataConfig, split: str) -> list[Path]:
    """The sorted image files of ``split``: folders are searched recursively, ``.txt`` files list one image per
    line (relative lines from the list file's folder). Raises :class:`DataError` when the split is not in the YAML,
    a folder / list file does not exist or no image is found."""
    where = str(config.yaml_file)
    files: list[Path] = []
    for p in split_sources(config, split):
        if p.is_dir():
            files += [f for f in p.rglob("*") if f.suffix[1:].lower() in IMG_FORMATS and f.is_file()]
            continue
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{where}: split {split!r}: cannot read image list {p} ({e})") from None
        for line in lines:
            f = Path(line.strip()).expanduser()
            if line.strip() and f.suffix[1:].lower() in IMG_FORMATS:
                files.append(_abs(f if f.is_absolute() else p.parent / f))
    files = sorted(set(files))
    if not files:
        raise DataError(f"{where}: split {split!r}: no images found in {config.splits[split]!r} under "
                        f"{config.root} (image suffixes: {', '.join(sorted(IMG_FORMATS))})")
    return files


@dataclass
class _Labels:
    """One image's rows, normalised: ``boxes (N, 4)`` cx, cy, w, h; ``keypoints (N, K, 3)`` x, y, visibility."""

    image_id: int
    image_file: Path
    label_file: Path | None
    boxes: np.ndarray
    keypoints: np.ndarray
    ann_ids: np.ndarray

    @property
    def people(self) -> np.ndarray:
        return (self.keypoints[..., 2] > 0).any(axis=1)


def parse_label_file(path: Path, num_keypoints: int, ndim: int,
                     num_classes: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of one label file: ``(boxes (N, 4) cx, cy, w, h, keypoints (N, K, 3) x, y, v)``, normalised, float64.

    ``num_classes`` > 0 checks the class index. Raises :class:`DataError` naming the file and line.
    """
    k = num_keypoints
    expected = 5 + k * ndim
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read label file ({e})") from None
    rows, linenos = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        values = line.split()
        if not values:
            continue
        if len(values) != expected:
            other = 5 + k * (5 - ndim)
            hint = (f"; {len(values)} is 5 + {k} * {5 - ndim}: is kpt_shape [{k}, {5 - ndim}]?"
                    if len(values) == other else "")
            raise DataError(f"{path}:{lineno}: {len(values)} values, expected {expected} = 5 + {k} * {ndim} (class, "
                            f"cx, cy, w, h, then x, y{', visibility' if ndim == 3 else ''} for each of the {k} "
                            f"keypoints of kpt_shape [{k}, {ndim}]){hint}")
        rows.append(values)
        linenos.append(lineno)
    if not rows:
        return np.zeros((0, 4)), np.zeros((0, k, 3))
    try:
        arr = np.array(rows, np.float64)
    except ValueError:
        r, bad = next((r, v) for r, vals in enumerate(rows) for v in vals if not _parses(v))
        raise DataError(f"{path}:{linenos[r]}: {bad!r} is not a number") from None
    _check_rows(arr, path, linenos, k, ndim, num_classes)
    seen: set = set()
    keep = [i for i, row in enumerate(map(tuple, arr.tolist())) if not (row in seen or seen.add(row))]
    if len(keep) < len(arr):
        dup = sorted(set(linenos) - {linenos[i] for i in keep})
        logger.warning("%s: dropped %d duplicate row(s) (lines %s)", path, len(dup), dup)
        arr = arr[keep]
    kp = arr[:, 5:].reshape(-1, k, ndim)
    if ndim == 2:
        unlabelled = (kp < 0).any(-1) | (kp == 0).all(-1)
        kp = np.concatenate([kp, np.where(unlabelled, 0.0, 2.0)[..., None]], axis=-1)
    kp[kp[..., 2] == 0, :2] = 0.0
    return arr[:, 1:5], kp


def _check_rows(arr: np.ndarray, path: Path, linenos: list[int], k: int, ndim: int, num_classes: int) -> None:
    """Vectorised checks of parsed rows ``(N, 5 + K * ndim)``; the first bad row is named by its line."""
    def fail(bad: np.ndarray, message) -> None:
        if bad.any():
            r = int(np.argmax(bad.reshape(len(arr), -1).any(axis=1)))
            raise DataError(f"{path}:{linenos[r]}: {message(r)}")

    fail(~np.isfinite(arr), lambda r: f"non-finite value at position {int(np.argmin(np.isfinite(arr[r])))}")
    cls = arr[:, 0]
    fail((cls != np.floor(cls)) | (cls < 0) | ((cls >= num_classes) if num_classes else False),
         lambda r: f"class {arr[r, 0]:g}, expected an integer"
                   + (f" in 0 .. {num_classes - 1} (names)" if num_classes else " >= 0"))
    kp = arr[:, 5:].reshape(len(arr), k, ndim)
    coords = np.concatenate([arr[:, 1:5], kp[..., :2].reshape(len(arr), -1)], axis=1)
    out = (coords < -COORD_TOLERANCE) | (coords > 1 + COORD_TOLERANCE)

    def where_out(r: int) -> str:
        i = int(np.argmax(out[r]))
        what = ("cx", "cy", "w", "h")[i] if i < 4 else f"keypoint {(i - 4) // 2} {'xy'[(i - 4) % 2]}"
        return (f"{what} = {coords[r, i]:g} is outside [0, 1] (tolerance {COORD_TOLERANCE}); label coordinates "
                f"must be normalised by the image width and height")

    fail(out, where_out)
    if ndim == 3:
        bad_v = ~np.isin(kp[..., 2], (0, 1, 2))
        fail(bad_v, lambda r: f"keypoint {int(np.argmax(bad_v[r]))} visibility is "
                              f"{kp[r, int(np.argmax(bad_v[r])), 2]:g}, expected 0, 1 or 2")


def _parses(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _image_header(path: Path) -> tuple[int, int, int]:
    """``(width, height, orientation)`` from the file header, the size after the EXIF orientation."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            o = im.getexif().get(_EXIF_ORIENTATION, 1)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except Exception as e:
        raise DataError(f"image file {path} cannot be read ({e})") from None
    o = int(o) if _is_int(o) and 1 <= o <= 8 else 1
    return (h, w, o) if o >= 5 else (w, h, o)


def _exif_orientation(path: Path) -> int:
    """The EXIF orientation tag (1..8) of an image file, 1 when it has none or the header cannot be read (the
    image reader reports unreadable files)."""
    try:
        return _image_header(path)[2]
    except DataError:
        return 1


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a stored pixel grid ``(H, W, C)`` upright by its EXIF orientation tag, as ``cv2.imread`` does."""
    ops = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
           8: lambda a: np.rot90(a, 1)}
    return image if orientation == 1 else np.ascontiguousarray(ops[orientation](image))


# --- the reader ------------------------------------------------------------------------------------------------
class YoloPoseDataset(SkippingIndex):
    """One split of an Ultralytics YOLO-pose dataset, as a sequence of :class:`Sample`.

    The interface is that of :class:`~bupose.data.coco_format.CocoKeypointDataset` (``len``, ``dataset[i]``,
    ``image_ids``, ``spec``, ``get_annotations``, ``image_path``, ``load_image``, ``get_ignore_mask``,
    ``load_sample``), plus :meth:`coco_gt` for evaluation. Conventions are in the module docstring.

    Args:
        data_yaml: the data YAML file.
        split: a split key of the YAML (``train``, ``val``, ``test``, ...).
        on_error: ``"raise"`` or ``"skip"``.
        min_people: keep only images with at least this many people with labelled keypoints (0: all images).
        transform: optional callable applied to each :class:`Sample` in ``__getitem__``; its result is returned.
        area_factor: ``Sample.areas`` and the GT ``area`` are ``area_factor * w * h`` of the box in pixels.

    Attributes:
        config: the parsed :class:`YoloDataConfig`.
        spec: the keypoint layout from the YAML.
        image_ids: ids of the images in the index; ``dataset[i]`` is ``image_ids[i]``.
        image_root: the dataset root (the YAML's ``path``).
        data_yaml, split, on_error, min_people, transform, area_factor: as given.
    """

    def __init__(self, data_yaml: str | Path, split: str = "val", on_error: str = "raise", min_people: int = 0,
                 transform: Callable[[Sample], Any] | None = None, area_factor: float = BOX_AREA_FACTOR):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.config = load_data_yaml(data_yaml)
        self.data_yaml = self.config.yaml_file
        self.split = split
        self.source = f"{self.data_yaml} split {split!r}"
        self.on_error = on_error
        self.min_people = int(min_people)
        self.transform = transform
        self.area_factor = float(area_factor)
        self.spec = self.config.spec
        self.image_root = self.config.root
        self._records: list[_Labels] = []
        self._bad: set[int] = set()
        self._headers: dict[int, tuple[int, int, int]] = {}
        self._build_index(split_image_files(self.config, split))
        self.image_ids: list[int] = [r.image_id for r in self._records]

    def _build_index(self, files: list[Path]) -> None:
        stems = [f.stem for f in files]
        numeric = all(s.isdecimal() for s in stems) and len({int(s) for s in stems}) == len(stems)
        labels = [label_path(f) for f in files]
        if not any(p.is_file() for p in labels) and not any(p.parent.is_dir() for p in labels):
            raise DataError(f"{self.data_yaml}: split {self.split!r}: no label files and no labels folder found; "
                            f"expected e.g. {labels[0]} for {files[0]} (an 'images' folder of the path becomes "
                            f"'labels', the suffix '.txt')")
        c = self.config
        next_id, dropped = 1, 0
        for pos, (image_file, label_file) in enumerate(zip(files, labels), 1):
            if label_file.is_file():
                try:
                    boxes, kps = parse_label_file(label_file, c.num_keypoints, c.ndim, len(c.class_names))
                except DataError as e:
                    if self.on_error == "raise":
                        raise
                    logger.warning("skipping image %s: %s", image_file, e)
                    dropped += 1
                    continue
            else:
                label_file, boxes, kps = None, np.zeros((0, 4)), np.zeros((0, c.num_keypoints, 3))
            n = len(boxes)
            rec = _Labels(int(image_file.stem) if numeric else pos, image_file, label_file, boxes, kps,
                          np.arange(next_id, next_id + n, dtype=np.int64))
            next_id += n
            if int(rec.people.sum()) >= self.min_people:
                self._records.append(rec)
        if dropped:
            logger.warning("%s: split %r: dropped %d of %d images with bad label files", self.data_yaml, self.split,
                           dropped, len(files))

    # --- access --------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int):
        index = self._check_index(index)
        sample = self.load_sample(index) if self.on_error == "raise" else self._load_or_next(index)
        return self.transform(sample) if self.transform is not None else sample

    def _where(self, rec: _Labels) -> str:
        return f"{self.data_yaml} split {self.split!r}: image {rec.image_id} ({rec.image_file.name!r})"

    def _file_name(self, rec: _Labels) -> str:
        """The image path relative to the dataset root where it lies below it, else absolute."""
        try:
            return rec.image_file.relative_to(self.image_root).as_posix()
        except ValueError:
            return str(rec.image_file)

    def image_path(self, index: int) -> Path:
        return self._records[self._check_index(index)].image_file

    def image_size(self, index: int) -> tuple[int, int]:
        """``(width, height)`` of ``dataset[index]`` after EXIF orientation, from the file header (cached)."""
        return self._header(self._check_index(index))[:2]

    def _header(self, index: int) -> tuple[int, int, int]:
        if index not in self._headers:
            rec = self._records[index]
            try:
                self._headers[index] = _image_header(rec.image_file)
            except DataError as e:
                raise DataError(f"{self._where(rec)}: {e}") from None
        return self._headers[index]

    def load_image(self, index: int) -> np.ndarray:
        """Read and check the image of ``dataset[index]``: ``(H, W, 3)`` uint8 BGR, EXIF orientation applied."""
        rec = self._records[self._check_index(index)]
        image = read_image(rec.image_file, self._where(rec))
        return apply_exif_orientation(image, _exif_orientation(rec.image_file))

    def _annotations(self, rec: _Labels, width: int, height: int) -> ImageAnnotations:
        scale = np.array([width, height], np.float64)
        cxcy, wh = rec.boxes[:, :2] * scale, rec.boxes[:, 2:] * scale
        boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)
        kps = rec.keypoints.copy()
        kps[..., :2] *= scale
        people = rec.people
        ignored = [{"id": int(a), "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                   for a, b in zip(rec.ann_ids[~people], boxes[~people])]
        return ImageAnnotations(
            image_id=rec.image_id, file_name=self._file_name(rec), width=int(width), height=int(height),
            keypoints=kps[people].astype(np.float32).reshape(-1, self.spec.num_keypoints, 3),
            boxes=boxes[people].astype(np.float32).reshape(-1, 4),
            areas=(self.area_factor * wh[people].prod(axis=1)).astype(np.float32).reshape(-1),
            ann_ids=rec.ann_ids[people].copy(), crowd_index=None, ignored=ignored)

    def get_annotations(self, index: int) -> ImageAnnotations:
        """The annotations of ``dataset[index]`` in pixels (the image size is read from the file header)."""
        index = self._check_index(index)
        w, h, _ = self._header(index)
        return self._annotations(self._records[index], w, h)

    def get_ignore_mask(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """``(H, W)`` uint8, 1 on the boxes of rows without labelled keypoints; ``size`` is ``(H, W)``, by default
        read from the file header."""
        index = self._check_index(index)
        h, w = size if size is not None else self._header(index)[1::-1]
        ann = self._annotations(self._records[index], w, h)
        return ignore_mask(ann.ignored, h, w, self._where(self._records[index]))

    def load_sample(self, index: int) -> Sample:
        """``dataset[index]`` without the skip strategy or transform: raises :class:`DataError` on a bad image."""
        index = self._check_index(index)
        rec = self._records[index]
        image = self.load_image(index)
        h, w = image.shape[:2]
        ann = self._annotations(rec, w, h)
        return Sample(image=image, keypoints=ann.keypoints, boxes=ann.boxes,
                      ignore_mask=ignore_mask(ann.ignored, h, w, self._where(rec)), image_id=rec.image_id,
                      file_name=str(rec.image_file), areas=ann.areas, ann_ids=ann.ann_ids, crowd_index=None)

    def coco_gt(self) -> dict:
        """The split as a COCO-format keypoint ground truth, for :class:`bupose.evaluation.KeypointEvaluator` with
        ``sigmas=dataset.spec.sigmas`` (protocol ``"coco"``: it reads ``area``).

        Every row is an annotation of category 1: keypoints in pixels, ``num_keypoints`` (labelled points; 0 makes
        the evaluator ignore the row), ``area = area_factor * w * h``, ``bbox`` ``[x, y, w, h]``, ``iscrowd`` 0. The
        category lists the keypoint names and the skeleton (1-based, COCO's convention). Image sizes are read from
        the file headers; an unreadable image raises, or with ``on_error="skip"`` is left out with a warning.
        """
        images, annotations = [], []
        for i, rec in enumerate(self._records):
            try:
                w, h, _ = self._header(i)
            except DataError as e:
                if self.on_error == "raise":
                    raise
                logger.warning("coco_gt: leaving out %s", e)
                continue
            images.append({"id": rec.image_id, "file_name": self._file_name(rec), "width": w, "height": h})
            scale = np.array([w, h], np.float64)
            for ann_id, box, kp in zip(rec.ann_ids, rec.boxes, rec.keypoints):
                bw, bh = box[2:] * scale
                x0, y0 = box[:2] * scale - (bw / 2, bh / 2)
                kpx = kp.copy()
                kpx[:, :2] *= scale
                flat = [float(v) if j % 3 < 2 else int(v) for j, v in enumerate(kpx.ravel())]
                annotations.append({
                    "id": int(ann_id), "image_id": rec.image_id, "category_id": 1, "keypoints": flat,
                    "num_keypoints": int((kp[:, 2] > 0).sum()), "area": float(self.area_factor * bw * bh),
                    "bbox": [float(x0), float(y0), float(bw), float(bh)], "iscrowd": 0})
        names = self.config.class_names
        category = {"id": 1, "name": names.get(0, "person") if len(names) <= 1 else "object",
                    "supercategory": "person", "keypoints": list(self.spec.names),
                    "skeleton": [[a + 1, b + 1] for a, b in self.spec.skeleton]}
        return {"images": images, "annotations": annotations, "categories": [category]}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.data_yaml)!r}, split={self.split!r}, images={len(self)}, "
                f"spec={self.spec.name!r}, on_error={self.on_error!r})")


# --- COCO -> YOLO ----------------------------------------------------------------------------------------------
def write_yolo_pose(coco_json: str | Path, image_root: str | Path, out_dir: str | Path, spec: KeypointSpec | str,
                    split: str = "val", copy_images: bool = False, class_name: str = "person") -> Path:
    """Write a COCO-format keypoint file and its images as an Ultralytics YOLO-pose split under ``out_dir``.

    Layout: ``out_dir/images/<split>/<file_name>`` (symbolic links to the originals, or copies with
    ``copy_images``), ``out_dir/labels/<split>/<file_name stem>.txt`` (one per image, empty for an image without
    people) and ``out_dir/data.yaml``. An existing ``data.yaml`` gets the split added (its ``kpt_shape`` must
    match); call once per split. The YAML holds an absolute ``path``, ``kpt_shape [K, 3]``, ``flip_idx``, ``names``,
    ``kpt_names``, ``kpt_oks_sigmas`` and ``skeleton`` from ``spec``, so the reader gives ``spec`` back.

    What the format cannot hold is dropped, as Ultralytics' converter does: crowd regions (``iscrowd``) and boxes of
    zero width or height. People that the COCO file ignores (``num_keypoints == 0``) are written with all keypoints
    0 so that the reader ignores them too. Coordinates are normalised by the file's ``width`` / ``height`` and
    written with 6 significant digits (< 1e-6 of the image size). Returns the YAML path.
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    coco_json, image_root, out_dir = Path(coco_json), Path(image_root), Path(out_dir)
    data = load_coco_json(coco_json)
    k = spec.num_keypoints
    yaml_file = out_dir / "data.yaml"
    meta = {}
    if yaml_file.is_file():
        meta = yaml.safe_load(yaml_file.read_text(encoding="utf-8")) or {}
        if list(meta.get("kpt_shape", [k, 3])) != [k, 3]:
            raise DataError(f"{yaml_file} exists with kpt_shape {meta.get('kpt_shape')}, expected [{k}, 3] for "
                            f"layout {spec.name!r}; write into another folder")
    cats = [c for c in data.get("categories") or [] if isinstance(c, dict) and "keypoints" in c]
    cat_ids = {c.get("id") for c in cats} if cats else None
    anns_by_image: dict = {}
    for a in data["annotations"]:
        if cat_ids is None or a.get("category_id") in cat_ids:
            anns_by_image.setdefault(a.get("image_id"), []).append(a)

    img_dir, lbl_dir = out_dir / "images" / split, out_dir / "labels" / split
    skipped_crowd = skipped_empty = rows = 0
    for img in data["images"]:
        file_name, width, height = img.get("file_name"), img.get("width"), img.get("height")
        where = f"{coco_json}: image {img.get('id')}"
        if not isinstance(file_name, str) or not file_name or Path(file_name).is_absolute() or ".." in Path(
                file_name).parts:
            raise DataError(f"{where}: 'file_name' is {file_name!r}, expected a path relative to the image folder")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (width, height)):
            raise DataError(f"{where}: 'width' / 'height' are {width!r} / {height!r}, expected positive numbers "
                            f"(they normalise the coordinates)")
        width, height = float(width), float(height)
        src, dst = _abs(image_root / file_name), img_dir / file_name
        if not src.is_file():
            raise DataError(f"{where}: image file not found: {src}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        if copy_images:
            shutil.copyfile(src, dst)
        else:
            os.symlink(src, dst)
        lines = []
        for a in anns_by_image.get(img["id"], []):
            if a.get("iscrowd", 0):
                skipped_crowd += 1
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            if w <= 0 or h <= 0:
                skipped_empty += 1
                continue
            kp = np.asarray(a.get("keypoints") or [0] * 3 * k, np.float64).reshape(k, 3)
            if a.get("num_keypoints", int((kp[:, 2] > 0).sum())) == 0:
                kp[:] = 0
            kp[kp[:, 2] == 0] = 0
            vals = [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height]
            fields = ["0"] + [f"{v:.6g}" for v in vals]
            for px, py, v in kp:
                fields += [f"{px / width:.6g}", f"{py / height:.6g}", str(int(v))]
            lines.append(" ".join(fields))
        label = (lbl_dir / file_name).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        rows += len(lines)
    if skipped_crowd or skipped_empty:
        logger.info("%s: left out %d crowd region(s) and %d empty box(es) that the YOLO format cannot hold",
                    coco_json, skipped_crowd, skipped_empty)

    meta.update({
        "path": str(_abs(out_dir)),
        split: f"images/{split}",
        "kpt_shape": [k, 3],
        "flip_idx": list(spec.flip_index),
        "names": {0: class_name},
        "kpt_names": {0: list(spec.names)},
        "kpt_oks_sigmas": [float(s) for s in spec.sigmas],
        "skeleton": [list(e) for e in spec.skeleton],
    })
    yaml_file.parent.mkdir(parents=True, exist_ok=True)
    yaml_file.write_text(yaml.safe_dump(meta, sort_keys=False, default_flow_style=None), encoding="utf-8")
    logger.info("%s: wrote %d images, %d rows to %s", coco_json, len(data["images"]), rows, out_dir)
    return yaml_file
