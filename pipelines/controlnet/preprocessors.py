"""ControlNet preprocessors ("annotators"): a registry of named image → control-map functions.

Each `Preprocessor` declares its sliders once (processor resolution, threshold A, threshold B: label,
default, range), in sd-webui-controlnet's terms and names, so the UI, the API and infotext agree.

- No-weight preprocessors run offline out of the box: none, invert, canny, shuffle, lineart_standard,
  threshold, tile_resample, blur_gaussian, scribble_xdog. They are implemented here with OpenCV/numpy
  (controlnet_aux takes seconds to import; shuffle here draws from a seeded generator so a seed gives
  the same map, where controlnet_aux uses numpy's global RNG).
- Weighted preprocessors (openpose, depth, lineart, softedge, mlsd, normal, ...) run controlnet_aux
  detectors. Their weights are the files of the Hugging Face repo `lllyasviel/Annotators`; they are
  looked up in `models/annotators/` (or any of its subfolders, e.g. A1111's `openpose/`), and otherwise
  downloaded there with a progress callback. Offline, `UserError` names the files and the folder.

Image helpers: `pixel_perfect_resolution` (sd-webui-controlnet's formula) and `fit_to_size` for the
three resize modes (Just Resize, Crop and Resize, Resize and Fill).
"""
from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.download import fetch_from_hub, hub_offline, hub_reachable
from ..core.errors import ParameterError, UserError

log = logging.getLogger(__name__)

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL = RESIZE_MODES
ANNOTATORS_REPO = "lllyasviel/Annotators"

Progress = Callable[[str, float], None]


# ------------------------------------------------------------------------------------ declarations

@dataclass(frozen=True)
class Slider:
    label: str
    default: float
    minimum: float
    maximum: float
    step: float = 1.0

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "default": self.default, "minimum": self.minimum, "maximum": self.maximum,
                "step": self.step}


RES = Slider("Preprocessor Resolution", 512, 64, 2048, 8)

# fn(image HWC uint8 RGB, resolution, threshold_a, threshold_b, context) -> map HWC uint8 (any size)
RunFn = Callable[[np.ndarray, int, float, float, "Annotators"], np.ndarray]


@dataclass(frozen=True)
class Preprocessor:
    name: str
    run: RunFn
    resolution: Slider | None = RES          # None: the image is used at its own size (none, invert)
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    weights: tuple[str, ...] = ()           # annotator files (lllyasviel/Annotators) it needs
    aliases: tuple[str, ...] = ()           # older sd-webui-controlnet names

    def describe(self) -> dict[str, Any]:
        """What a front end needs to draw this preprocessor's sliders."""
        return {"name": self.name, "weights": list(self.weights),
                "processor_res": self.resolution.describe() if self.resolution else None,
                "threshold_a": self.threshold_a.describe() if self.threshold_a else None,
                "threshold_b": self.threshold_b.describe() if self.threshold_b else None}

    def resolve(self, processor_res: float = -1, threshold_a: float = -1, threshold_b: float = -1,
                field_prefix: str = "") -> tuple[int, float, float]:
        """Slider values with -1 → default; out-of-range values raise ParameterError naming the field."""
        out = []
        for name, slider, value in (("processor_res", self.resolution, processor_res),
                                    ("threshold_a", self.threshold_a, threshold_a),
                                    ("threshold_b", self.threshold_b, threshold_b)):
            if slider is None:
                out.append(value)
                continue
            if value is None or value == -1:
                value = slider.default
            if not slider.minimum <= value <= slider.maximum:
                raise ParameterError(f"{field_prefix}{name}", f"{value:g} is outside {slider.label}'s range "
                                     f"{slider.minimum:g}..{slider.maximum:g} for {self.name}")
            out.append(value)
        return int(out[0]), float(out[1]), float(out[2])


# ------------------------------------------------------------------------------------ image helpers

def to_rgb_array(image) -> np.ndarray:
    """PIL image or array (HW, HWC with 1/3/4 channels) → HWC uint8 RGB; alpha is composited on white."""
    arr = np.asarray(image.convert("RGBA") if hasattr(image, "convert") and image.mode not in ("RGB", "L")
                     else image)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise UserError(f"control image has shape {arr.shape}; expected an RGB(A) or grayscale image")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    if width < w and height < h:
        interp = cv2.INTER_AREA
    elif len(np.unique(img[::max(1, h // 64), ::max(1, w // 64)])) <= 2:
        interp = cv2.INTER_NEAREST  # binary maps (edges, thresholds) stay binary when enlarged
    else:
        interp = cv2.INTER_CUBIC
    out = cv2.resize(img, (max(1, width), max(1, height)), interpolation=interp)
    return out[:, :, None] if out.ndim == 2 else out


def resize_short_side(img: np.ndarray, resolution: int) -> np.ndarray:
    """Scale so the shorter side is `resolution` (what a preprocessor's resolution slider means)."""
    h, w = img.shape[:2]
    k = float(resolution) / min(h, w)
    return _resize(img, int(round(w * k)), int(round(h * k)))


def pixel_perfect_resolution(image_height: int, image_width: int, target_height: int, target_width: int,
                             resize_mode: str) -> int:
    """sd-webui-controlnet's "Pixel Perfect": the preprocessor resolution at which the map lands on the
    target size without rescaling (short side of the image scaled as the resize mode will scale it)."""
    k0 = float(target_height) / float(image_height)
    k1 = float(target_width) / float(image_width)
    k = min(k0, k1) if resize_mode == RESIZE_AND_FILL else max(k0, k1)
    return int(np.round(k * float(min(image_height, image_width))))


def fit_to_size(img: np.ndarray, width: int, height: int, resize_mode: str) -> np.ndarray:
    """A control map at exactly width x height.

    Just Resize: stretch. Crop and Resize: scale to cover, centre crop. Resize and Fill: scale to fit,
    pad with the median colour of the map's border (as sd-webui-controlnet does)."""
    if resize_mode not in RESIZE_MODES:
        raise UserError(f"unknown resize mode {resize_mode!r}; one of {', '.join(RESIZE_MODES)}")
    h, w = img.shape[:2]
    if resize_mode == JUST_RESIZE:
        return _resize(img, width, height)
    if resize_mode == CROP_AND_RESIZE:
        k = max(height / h, width / w)
        nw, nh = max(width, int(np.ceil(w * k - 1e-6))), max(height, int(np.ceil(h * k - 1e-6)))
        scaled = _resize(img, nw, nh)
        y0, x0 = (nh - height) // 2, (nw - width) // 2
        return np.ascontiguousarray(scaled[y0:y0 + height, x0:x0 + width])
    k = min(height / h, width / w)
    nw, nh = min(width, max(1, int(round(w * k)))), min(height, max(1, int(round(h * k))))
    scaled = _resize(img, nw, nh)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]], axis=0)
    colour = np.median(border, axis=0).astype(img.dtype)
    out = np.tile(colour[None, None, :], (height, width, 1))
    y0, x0 = (height - nh) // 2, (width - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = scaled
    return out


def _hwc3(x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:
        x = x[:, :, None]
    return to_rgb_array(x)


# ------------------------------------------------------------------------------ no-weight preprocessors

def _none(img, res, a, b, ctx):
    return img


def _invert(img, res, a, b, ctx):
    return 255 - img


def _canny(img, res, a, b, ctx):
    import cv2

    return _hwc3(cv2.Canny(resize_short_side(img, res), int(a), int(b)))


def _noise_disk(rng: np.random.Generator, h: int, w: int, f: int) -> np.ndarray:
    import cv2

    noise = rng.uniform(0.0, 1.0, size=((h // f) + 2, (w // f) + 2))
    noise = cv2.resize(noise, (w + 2 * f, h + 2 * f), interpolation=cv2.INTER_CUBIC)[f:f + h, f:f + w]
    noise = noise - noise.min()
    return (noise / max(float(noise.max()), 1e-8))[:, :, None]


def _shuffle(img, res, a, b, ctx):
    """Content shuffle: the image warped by a smooth random flow field (cell size 256 px)."""
    import cv2

    img = resize_short_side(img, res)
    h, w = img.shape[:2]
    rng = np.random.default_rng(ctx.seed)
    x = _noise_disk(rng, h, w, 256) * float(w - 1)
    y = _noise_disk(rng, h, w, 256) * float(h - 1)
    flow = np.concatenate([x, y], axis=2).astype(np.float32)
    return cv2.remap(img, flow, None, cv2.INTER_LINEAR)


def _lineart_standard(img, res, a, b, ctx):
    """Lines of a drawing on a white background: how much darker each pixel is than its blurred
    surroundings (sd-webui-controlnet's / controlnet_aux's lineart_standard, same constants)."""
    import cv2

    x = resize_short_side(img, res).astype(np.float32)
    g = cv2.GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(g - x, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(strong)) if strong.size else 16.0)
    return _hwc3((intensity * 127).clip(0, 255).astype(np.uint8))


def _threshold(img, res, a, b, ctx):
    x = resize_short_side(img, res)
    gray = x.mean(axis=2)
    return _hwc3(np.where(gray > a, 255, 0).astype(np.uint8))


def _tile_resample(img, res, a, b, ctx):
    """Tile: the image itself, optionally downsampled by threshold A (resolution is not used)."""
    if a <= 1:
        return img
    h, w = img.shape[:2]
    return _resize(img, max(1, int(w / a)), max(1, int(h / a)))


def _blur_gaussian(img, res, a, b, ctx):
    import cv2

    return cv2.GaussianBlur(resize_short_side(img, res), (0, 0), float(a))


def _scribble_xdog(img, res, a, b, ctx):
    import cv2

    x = resize_short_side(img, res).astype(np.float32)
    g1 = cv2.GaussianBlur(x, (0, 0), 0.5)
    g2 = cv2.GaussianBlur(x, (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255)
    return _hwc3(np.where(dog < 255 - a, 255, 0).astype(np.uint8))


# ------------------------------------------------------------------------------ weighted preprocessors

class Annotators:
    """Where annotator weights live, how to fetch them, and the loaded detectors (a small cache).

    `dirs`: folders searched in order (the app's `models/annotators`, then A1111 ones); downloads go
    to the first. `seed` makes shuffle reproducible. `progress(stage, fraction)` hears downloads.
    """

    HUB_REPO = ANNOTATORS_REPO

    def __init__(self, dirs: list[Path] | None = None, *, device: str = "cpu", seed: int | None = None,
                 progress: Progress | None = None, cache_size: int = 1):
        self.dirs = [Path(d) for d in (dirs or [])]
        self.device = device
        self.seed = seed
        self.progress = progress
        self.cache_size = max(1, cache_size)
        self._detectors: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def with_seed(self, seed: int | None) -> Annotators:
        other = Annotators(self.dirs, device=self.device, seed=seed, progress=self.progress,
                           cache_size=self.cache_size)
        other._detectors, other._lock = self._detectors, self._lock   # share loaded detectors
        return other

    def locate(self, files: tuple[str, ...]) -> Path | None:
        """The folder holding all of `files`: an annotators folder itself or one of its subfolders."""
        for root in self.dirs:
            if not root.is_dir():
                continue
            candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            for cand in candidates:
                if all((cand / f).is_file() for f in files):
                    return cand
        return None

    def _where(self) -> str:
        return str(self.dirs[0]) if self.dirs else "models/annotators"

    def ensure(self, files: tuple[str, ...], who: str) -> Path:
        """A folder with every file of `files`, downloading the missing ones from the Hub if possible."""
        found = self.locate(files)
        if found is not None:
            return found
        names = ", ".join(files)
        manual = (f"download {'them' if len(files) > 1 else 'it'} from https://huggingface.co/{self.HUB_REPO} "
                  f"and put {'them' if len(files) > 1 else 'it'} in {self._where()}")
        if not self.dirs:
            raise UserError(f"preprocessor {who} needs annotator weights {names}; {manual}")
        if hub_offline():
            raise UserError(f"preprocessor {who} needs annotator weights {names}: not found and offline "
                            f"(HF_HUB_OFFLINE is set); {manual}")
        unreachable = hub_reachable()
        if unreachable:
            raise UserError(f"preprocessor {who} needs annotator weights {names}: not found and they cannot be "
                            f"downloaded ({unreachable}); {manual}")
        target = self.dirs[0]
        missing = [name for name in files if not (target / name).is_file()]
        fetch_from_hub(self.HUB_REPO, [(name,) for name in missing], target,
                       what=f"annotator weights for {who} ({', '.join(missing)})", hint=manual, progress=self.progress)
        return target

    def detector(self, key: str, files: tuple[str, ...], who: str, factory: Callable[[str], Any]) -> Any:
        """A loaded controlnet_aux detector (`factory(folder)`), cached; moved to the device."""
        with self._lock:
            det = self._detectors.get(key)
            if det is not None:
                self._detectors.move_to_end(key)
                return det
            folder = self.ensure(files, who)
            try:
                det = factory(str(folder))
            except UserError:
                raise
            except Exception as err:
                raise UserError(f"preprocessor {who}: could not load annotator weights from {folder} "
                                f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
                                f"the files may be corrupt or of another version") from err
            if hasattr(det, "to"):
                det = det.to(self.device) or det
            self._detectors[key] = det
            while len(self._detectors) > self.cache_size:
                self._detectors.popitem(last=False)
            return det

    def clear(self) -> None:
        with self._lock:
            self._detectors.clear()


def _controlnet_aux():
    """controlnet_aux, imported on first use (seconds); its warnings about optional extras are noise here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import controlnet_aux
    return controlnet_aux


def _aux(key: str, files: tuple[str, ...], class_name: str, **call_kwargs) -> RunFn:
    """A controlnet_aux detector as a RunFn; `call_kwargs` are fixed arguments of its __call__."""

    def factory(folder: str):
        return getattr(_controlnet_aux(), class_name).from_pretrained(folder)

    def run(img, res, a, b, ctx: Annotators):
        det = ctx.detector(key, files, key, factory)
        out = det(img, detect_resolution=int(res), image_resolution=int(res), output_type="np", **call_kwargs)
        return _hwc3(np.asarray(out))

    return run


def _aux_mlsd(img, res, a, b, ctx):
    det = ctx.detector("mlsd", _W_MLSD, "mlsd", lambda d: _controlnet_aux().MLSDdetector.from_pretrained(d))
    return _hwc3(np.asarray(det(img, thr_v=a, thr_d=b, detect_resolution=int(res), image_resolution=int(res),
                                output_type="np")))


def _aux_leres(boost: bool) -> RunFn:
    def run(img, res, a, b, ctx):
        det = ctx.detector("leres", _W_LERES, "depth_leres",
                           lambda d: _controlnet_aux().LeresDetector.from_pretrained(d))
        return _hwc3(np.asarray(det(img, thr_a=a, thr_b=b, boost=boost, detect_resolution=int(res),
                                    image_resolution=int(res), output_type="np")))

    return run


_W_OPENPOSE = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
_W_MIDAS = ("dpt_hybrid-midas-501f0c75.pt",)
_W_ZOE = ("ZoeD_M12_N.pt",)
_W_LERES = ("res101.pth", "latest_net_G.pth")
_W_LINEART = ("sk_model.pth", "sk_model2.pth")
_W_ANIME = ("netG.pth",)
_W_HED = ("ControlNetHED.pth",)
_W_PIDI = ("table5_pidinet.pth",)
_W_MLSD = ("mlsd_large_512_fp32.pth",)
_W_BAE = ("scannet.pt",)


def _pose(**kw) -> RunFn:
    return _aux("openpose", _W_OPENPOSE, "OpenposeDetector", **kw)


_REGISTRY: tuple[Preprocessor, ...] = (
    Preprocessor("none", _none, resolution=None),
    Preprocessor("invert (from white bg & black line)", _invert, resolution=None, aliases=("invert",)),
    Preprocessor("canny", _canny, threshold_a=Slider("Canny Low Threshold", 100, 1, 255),
                 threshold_b=Slider("Canny High Threshold", 200, 1, 255)),
    Preprocessor("shuffle", _shuffle, aliases=("content_shuffle",)),
    Preprocessor("lineart_standard (from white bg & black line)", _lineart_standard, aliases=("lineart_standard",)),
    Preprocessor("threshold", _threshold, threshold_a=Slider("Binarization Threshold", 127, 0, 255)),
    Preprocessor("tile_resample", _tile_resample, resolution=None,
                 threshold_a=Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01)),
    Preprocessor("blur_gaussian", _blur_gaussian, threshold_a=Slider("Sigma", 9.0, 0.01, 64.0, 0.01)),
    Preprocessor("scribble_xdog", _scribble_xdog, threshold_a=Slider("XDoG Threshold", 32, 1, 64)),
    # weighted (controlnet_aux)
    Preprocessor("openpose", _pose(include_body=True, include_hand=False, include_face=False), weights=_W_OPENPOSE),
    Preprocessor("openpose_face", _pose(include_body=True, include_hand=False, include_face=True),
                 weights=_W_OPENPOSE),
    Preprocessor("openpose_faceonly", _pose(include_body=False, include_hand=False, include_face=True),
                 weights=_W_OPENPOSE),
    Preprocessor("openpose_hand", _pose(include_body=True, include_hand=True, include_face=False),
                 weights=_W_OPENPOSE),
    Preprocessor("openpose_full", _pose(include_body=True, include_hand=True, include_face=True), weights=_W_OPENPOSE),
    Preprocessor("depth_midas", _aux("midas", _W_MIDAS, "MidasDetector"), weights=_W_MIDAS, aliases=("depth",)),
    Preprocessor("depth_zoe", _aux("zoe", _W_ZOE, "ZoeDetector"), weights=_W_ZOE),
    Preprocessor("depth_leres", _aux_leres(False), weights=_W_LERES,
                 threshold_a=Slider("Remove Near %", 0, 0, 100, 0.1),
                 threshold_b=Slider("Remove Background %", 0, 0, 100, 0.1)),
    Preprocessor("depth_leres++", _aux_leres(True), weights=_W_LERES,
                 threshold_a=Slider("Remove Near %", 0, 0, 100, 0.1),
                 threshold_b=Slider("Remove Background %", 0, 0, 100, 0.1)),
    Preprocessor("lineart_realistic", _aux("lineart", _W_LINEART, "LineartDetector", coarse=False),
                 weights=_W_LINEART, aliases=("lineart",)),
    Preprocessor("lineart_coarse", _aux("lineart", _W_LINEART, "LineartDetector", coarse=True), weights=_W_LINEART),
    Preprocessor("lineart_anime", _aux("lineart_anime", _W_ANIME, "LineartAnimeDetector"), weights=_W_ANIME),
    Preprocessor("softedge_hed", _aux("hed", _W_HED, "HEDdetector", safe=False), weights=_W_HED, aliases=("hed",)),
    Preprocessor("softedge_hedsafe", _aux("hed", _W_HED, "HEDdetector", safe=True), weights=_W_HED,
                 aliases=("hed_safe",)),
    Preprocessor("scribble_hed", _aux("hed", _W_HED, "HEDdetector", scribble=True), weights=_W_HED),
    Preprocessor("softedge_pidinet", _aux("pidi", _W_PIDI, "PidiNetDetector", safe=False), weights=_W_PIDI,
                 aliases=("pidinet",)),
    Preprocessor("softedge_pidisafe", _aux("pidi", _W_PIDI, "PidiNetDetector", safe=True), weights=_W_PIDI,
                 aliases=("pidinet_safe",)),
    Preprocessor("scribble_pidinet", _aux("pidi", _W_PIDI, "PidiNetDetector", scribble=True), weights=_W_PIDI,
                 aliases=("pidinet_scribble",)),
    Preprocessor("mlsd", _aux_mlsd, weights=_W_MLSD, threshold_a=Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
                 threshold_b=Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01)),
    Preprocessor("normal_bae", _aux("normal_bae", _W_BAE, "NormalBaeDetector"), weights=_W_BAE),
)

PREPROCESSORS: dict[str, Preprocessor] = {p.name: p for p in _REGISTRY}
_ALIASES: dict[str, str] = {a.lower(): p.name for p in _REGISTRY for a in p.aliases}


def preprocessor_names() -> list[str]:
    """Names for a dropdown: 'none' first, then the rest in declaration order."""
    return [p.name for p in _REGISTRY]


def get_preprocessor(name: str | None) -> Preprocessor:
    """By name or an older alias ('hed', 'depth', 'invert', ...); UserError naming the choices otherwise."""
    key = (name or "none").strip()
    if key in PREPROCESSORS:
        return PREPROCESSORS[key]
    low = key.lower()
    for p in _REGISTRY:
        if p.name.lower() == low:
            return p
    if low in _ALIASES:
        return PREPROCESSORS[_ALIASES[low]]
    raise UserError(f"unknown ControlNet preprocessor {name!r}; one of: {', '.join(preprocessor_names())}")


@dataclass
class Detected:
    """A preprocessor's output before it is fitted to the generation size."""

    image: np.ndarray                   # HWC uint8 RGB
    module: str
    processor_res: int                  # resolution actually used (pixel perfect applied)
    notices: list[str] = field(default_factory=list)


def run_preprocessor(name: str, image, *, processor_res: float = -1, threshold_a: float = -1,
                     threshold_b: float = -1, annotators: Annotators | None = None,
                     target: tuple[int, int] | None = None, resize_mode: str = CROP_AND_RESIZE,
                     pixel_perfect: bool = False) -> Detected:
    """Run preprocessor `name` on `image` (PIL or array); raises UserError when it cannot run.

    `target` (width, height) with `pixel_perfect` picks the resolution from the generation size.
    The result is not resized to the target; `fit_to_size` does that (it depends on the resize mode).
    """
    pre = get_preprocessor(name)
    res, a, b = pre.resolve(processor_res, threshold_a, threshold_b)
    img = to_rgb_array(image)
    if pixel_perfect and target is not None and pre.resolution is not None:
        res = pixel_perfect_resolution(img.shape[0], img.shape[1], target[1], target[0], resize_mode)
        res = int(min(max(res, pre.resolution.minimum), pre.resolution.maximum))
    ctx = annotators or Annotators()
    try:
        out = pre.run(img, res, a, b, ctx)
    except UserError:
        raise
    except Exception as err:  # a broken detector must not take the job down with a traceback
        log.exception("preprocessor %s failed", pre.name)
        raise UserError(f"preprocessor {pre.name} failed: {type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200] if str(err) else ''}") from err
    return Detected(_hwc3(np.asarray(out)), pre.name, res)


def preview(name: str, image, *, width: int = 512, height: int = 512, resize_mode: str = CROP_AND_RESIZE,
            pixel_perfect: bool = False, processor_res: float = -1, threshold_a: float = -1,
            threshold_b: float = -1, annotators: Annotators | None = None):
    """The control map a unit would use for a width x height generation, as a PIL image (UI preview)."""
    from PIL import Image

    det = run_preprocessor(name, image, processor_res=processor_res, threshold_a=threshold_a,
                           threshold_b=threshold_b, annotators=annotators, target=(width, height),
                           resize_mode=resize_mode, pixel_perfect=pixel_perfect)
    return Image.fromarray(fit_to_size(det.image, width, height, resize_mode))
