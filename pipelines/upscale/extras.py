"""The Extras tab's upscaling (A1111's postprocessing_upscale): one image, a batch, or a folder.

    req = ExtrasRequest(upscaling_resize=4, upscaler_1="R-ESRGAN 4x+")
    image, info = postprocess(image, req, upscalers)      # info: {"Postprocess upscale by": 4, ...}

Scale by a factor (resize_mode 0) or to a width x height (resize_mode 1; with upscaling_crop the result is
cropped to exactly that size around the centre, as A1111 does). A second upscaler runs on the same input and
is blended in with `extras_upscaler_2_visibility`. The parameters become A1111's `postprocessing` infotext
("Postprocess upscale by: 4, Postprocess upscaler: R-ESRGAN 4x+"); a saved image keeps the source's own
generation parameters with them (appended to the last line, where A1111 readers take key: value pairs).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

from PIL import Image

from ..core.errors import Interrupted, ParameterError, UserError
from ..images.inputs import load_image
from ..images.metadata import read_infotext
from .upscalers import Upscalers

log = logging.getLogger(__name__)

# Upscaled results are bounded like inputs: a 2048x2048 image upscaled 4x is the largest accepted.
MAX_OUTPUT_SIDE = 8192
MAX_OUTPUT_PIXELS = 8192 * 8192
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")   # img2img batch's


@dataclass(frozen=True)
class ExtrasRequest:
    """A1111's extras request fields (ExtrasBaseRequest), upscaling part; face restoration is not built."""

    resize_mode: int = 0                    # 0: scale by upscaling_resize, 1: scale to w x h
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False             # order relative to face restoration (accepted, nothing else to order)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExtrasRequest":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})


def check(req: ExtrasRequest, upscalers: Upscalers) -> None:
    """ParameterError naming the first bad field."""
    if req.resize_mode not in (0, 1):
        raise ParameterError("resize_mode", "0 (scale by) or 1 (scale to)")
    if req.resize_mode == 0 and not 0 < req.upscaling_resize <= 8:
        raise ParameterError("upscaling_resize", f"{req.upscaling_resize} is not in (0, 8]")
    if req.resize_mode == 1:
        for name in ("upscaling_resize_w", "upscaling_resize_h"):
            value = getattr(req, name)
            if not 8 <= value <= MAX_OUTPUT_SIDE:
                raise ParameterError(name, f"{value} is not between 8 and {MAX_OUTPUT_SIDE}")
    if not 0 <= req.extras_upscaler_2_visibility <= 1:
        raise ParameterError("extras_upscaler_2_visibility", "must be between 0 and 1")
    upscalers.find(req.upscaler_1, "upscaler_1")
    upscalers.find(req.upscaler_2, "upscaler_2")


def _target(image: Image.Image, req: ExtrasRequest, info: dict[str, Any]) -> float:
    if req.resize_mode == 1:
        info["Postprocess upscale to"] = f"{req.upscaling_resize_w}x{req.upscaling_resize_h}"
        return max(req.upscaling_resize_w / image.width, req.upscaling_resize_h / image.height)
    info["Postprocess upscale by"] = req.upscaling_resize
    return req.upscaling_resize


def _one(image: Image.Image, req: ExtrasRequest, field: str, scale: float, upscalers: Upscalers,
         progress, info: dict[str, Any]) -> Image.Image:
    out = upscalers.upscale(image, scale, getattr(req, field), progress=progress, field=field)
    if req.resize_mode == 1 and req.upscaling_crop:
        # A1111 pastes the upscaled image centred on a canvas of exactly the asked size (a crop when larger)
        canvas = Image.new("RGB", (req.upscaling_resize_w, req.upscaling_resize_h))
        canvas.paste(out, (req.upscaling_resize_w // 2 - out.width // 2, req.upscaling_resize_h // 2 - out.height // 2))
        out = canvas
        info["Postprocess crop to fit"] = True
    return out


def postprocess(image: Image.Image, req: ExtrasRequest, upscalers: Upscalers,
                progress: Callable[[int, int], None] | None = None) -> tuple[Image.Image, dict[str, Any]]:
    """The upscaled image and its postprocessing parameters (A1111's pp.info)."""
    check(req, upscalers)
    image = image.convert("RGB")
    info: dict[str, Any] = {}
    scale = _target(image, req, info)
    w, h = int(image.width * scale), int(image.height * scale)
    if max(w, h) > MAX_OUTPUT_SIDE or w * h > MAX_OUTPUT_PIXELS:
        raise ParameterError("upscaling_resize", f"the result would be {w}x{h}, above the {MAX_OUTPUT_SIDE}px / "
                                                 f"{MAX_OUTPUT_PIXELS // 1_000_000} MP limit")
    out = _one(image, req, "upscaler_1", scale, upscalers, progress, info)
    info["Postprocess upscaler"] = req.upscaler_1
    if req.upscaler_2 != "None" and req.extras_upscaler_2_visibility > 0:
        second = _one(image, req, "upscaler_2", scale, upscalers, progress, {})
        if second.size != out.size:   # the two upscalers round differently only through their own passes
            second = second.resize(out.size, Image.LANCZOS)
        out = Image.blend(out, second, req.extras_upscaler_2_visibility)
        info["Postprocess upscaler 2"] = req.upscaler_2
        info["Postprocess upscaler 2 visibility"] = req.extras_upscaler_2_visibility
    return out, info


def postprocessing_text(info: dict[str, Any]) -> str:
    """A1111's infotext of pp.info: `key: value` pairs joined by ", " (a key alone when it equals its value)."""
    def fmt(v):
        text = f"{v:g}" if isinstance(v, float) else str(v)
        return f'"{text}"' if any(c in text for c in ',:"') else text
    return ", ".join(k if k == v else f"{k}: {fmt(v)}" for k, v in info.items() if v is not None)


def saved_infotext(source: Image.Image, postprocessing: str) -> str:
    """What a saved extras image embeds: the source's generation parameters (if any) plus the postprocessing."""
    try:
        original, _items = read_infotext(source)
    except Exception:  # noqa: BLE001 - unreadable metadata only means there is nothing to keep
        original = None
    return f"{original.rstrip()}, {postprocessing}" if original else postprocessing


@dataclass
class ExtrasResult:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)      # the postprocessing text of each image
    paths: list[Path] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)   # (input name, message): reported, skipped
    skipped_existing: list[str] = field(default_factory=list)
    interrupted: bool = False


def run(sources: Iterable[tuple[str, Any]], req: ExtrasRequest, upscalers: Upscalers, *, saver=None,
        output_dir: Path | None = None, fmt: str = "png", control=None, keep_images: bool = True) -> ExtrasResult:
    """Upscale each (name, image source); save to `output_dir` as `<stem>.<fmt>` or with `saver` into
    outputs/extras-images (None for neither). A source that cannot be read is reported and skipped."""
    check(req, upscalers)
    sources = list(sources)
    result = ExtrasResult()
    for index, (name, source) in enumerate(sources):
        if control is not None:
            if control.interrupted.is_set():
                result.interrupted = True
                break
            control.update(fraction=index / max(1, len(sources)), image=index, images=len(sources),
                           text=f"extras: {name} ({index + 1}/{len(sources)})")
        try:
            image = load_image(source, what=name or "image")
        except UserError as err:
            result.errors.append((name, str(err)))
            continue
        progress = _tile_progress(control, index, len(sources))
        try:
            out, info = postprocess(image, req, upscalers, progress)
        except Interrupted:
            result.interrupted = True
            break
        text = postprocessing_text(info)
        result.infotexts.append(text)
        if keep_images:
            result.images.append(out)
        if output_dir is not None:
            from ..images.metadata import write_image

            target = Path(output_dir) / f"{Path(name).stem}.{fmt}"
            tmp = target.with_name(f".{target.name}.part")
            write_image(out, tmp, saved_infotext(image, text), fmt)
            tmp.replace(target)   # never a half-written output under the final name
            result.paths.append(target)
        elif saver is not None:
            result.paths.append(saver.save(out, saved_infotext(image, text), kind="extras-images"))
    if control is not None:
        control.update(fraction=1.0)
    return result


def _tile_progress(control, index: int, count: int):
    if control is None:
        return None

    def on_tile(done: int, total: int) -> None:
        control.update(fraction=(index + done / max(1, total)) / max(1, count), step=done, steps=total)
        control.check()
    return on_tile


def run_folder(input_dir, output_dir, req: ExtrasRequest, upscalers: Upscalers, *, saver=None, fmt: str = "png",
               control=None) -> ExtrasResult:
    """A folder of images (img2img batch's rules): outputs as `<stem>.<fmt>` in `output_dir` (an input whose output
    exists is skipped, so a stopped batch resumes), or into outputs/extras-images without one."""
    if input_dir is None or not str(input_dir).strip():
        raise UserError("no input folder given")
    in_dir = Path(input_dir).expanduser()
    if not in_dir.is_dir():
        raise UserError(f"input folder {str(in_dir)!r} is not a folder")
    out_dir = Path(output_dir).expanduser() if output_dir is not None and str(output_dir).strip() else None
    if out_dir is not None:
        if out_dir.resolve() == in_dir.resolve():
            raise UserError("the output folder is the input folder: outputs would replace the inputs; "
                            "choose another output folder")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the output folder {str(out_dir)!r}: {err}") from None
    inputs = sorted(p for p in in_dir.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    done = [p for p in inputs if out_dir is not None and (out_dir / f"{p.stem}.{fmt}").exists()]
    todo = [p for p in inputs if p not in done]
    result = run([(p.name, p) for p in todo], req, upscalers, saver=saver if out_dir is None else None,
                 output_dir=out_dir, fmt=fmt, control=control, keep_images=False)
    result.skipped_existing = [p.name for p in done]
    return result
