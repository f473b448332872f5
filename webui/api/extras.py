"""A1111's upscaler routes: /upscalers, /latent-upscale-modes, /extra-single-image, /extra-batch-images.

The request and response shapes are A1111's (ExtrasSingleImageRequest / ExtrasBatchImagesRequest), so
`webuiapi`'s extra_single_image / extra_batch_images work unchanged. As in A1111, the API returns the images
and saves nothing. Upscaling is a job on the shared queue (progress per tile, interrupt between tiles).
Face restoration (gfpgan/codeformer visibility above 0) is not built: 422 naming the field.
"""
from __future__ import annotations

import html
from typing import Optional

from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from pipelines.upscale import LATENT_MODES
from pipelines.upscale import extras as engine_extras

from pipelines.core.errors import ParameterError, UserError

from . import models as M
from .images import decode_image, encode_image

MAX_BATCH_IMAGES = 32


class ExtrasBaseRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    resize_mode: int = Field(0, ge=0, le=1, description="0: scale by upscaling_resize, 1: scale to w x h")
    show_extras_results: bool = Field(True, description="return the images")
    gfpgan_visibility: float = Field(0, ge=0, le=1, description="face restoration: not available (must be 0)")
    codeformer_visibility: float = Field(0, ge=0, le=1, description="face restoration: not available (must be 0)")
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, gt=0, le=8, description="scale factor (resize_mode 0)")
    upscaling_resize_w: int = Field(512, ge=8, le=engine_extras.MAX_OUTPUT_SIDE, description="target width")
    upscaling_resize_h: int = Field(512, ge=8, le=engine_extras.MAX_OUTPUT_SIDE, description="target height")
    upscaling_crop: bool = Field(True, description="crop to fit the target size (resize_mode 1)")
    upscaler_1: str = Field("None", max_length=500, description="name from /upscalers")
    upscaler_2: str = Field("None", max_length=500, description="name from /upscalers, blended in")
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = Field("", description="base64 image")


class FileData(BaseModel):
    data: str = Field(description="base64 image")
    name: str = Field("", max_length=500)


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData] = Field(default_factory=list, max_length=MAX_BATCH_IMAGES)


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: Optional[str] = None


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


def _engine_request(body: ExtrasBaseRequest) -> engine_extras.ExtrasRequest:
    # A request this build cannot carry out as asked is the client's to change (422 naming the field), not a
    # server failure: face restoration is not built.
    for name in ("gfpgan_visibility", "codeformer_visibility"):
        if getattr(body, name) > 0:
            raise ParameterError(name, "face restoration (GFPGAN, CodeFormer) is not available in this build; send 0")
    return engine_extras.ExtrasRequest.from_dict(body.model_dump())


def add_routes(route, state, http_error) -> None:
    """Register the routes with `route(path, methods, **kw)` of create_api_router."""
    upscalers = state.services.engine.upscalers
    # A1111's ESRGAN_tile / ESRGAN_tile_overlap options reach every model pass (hires fix included).
    upscalers.tile_options = lambda: (state.store.get("ESRGAN_tile"), state.store.get("ESRGAN_tile_overlap"))

    @route("/upscalers", ["GET"], response_model=list[M.UpscalerItem])
    def get_upscalers():
        upscalers.refresh()   # a folder walk: files added since start are listed without a restart
        return [{"name": e.name, "model_name": e.model_name, "model_path": e.model_path, "model_url": None,
                 "scale": e.scale} for e in upscalers.entries()]

    @route("/latent-upscale-modes", ["GET"])
    def get_latent_upscale_modes() -> list[dict]:
        return [{"name": name} for name in LATENT_MODES]

    async def run(sources: list[tuple[str, str]], body: ExtrasBaseRequest):
        try:
            req = _engine_request(body)
            await run_in_threadpool(engine_extras.check, req, upscalers)
            images = await run_in_threadpool(
                lambda: [(name or f"image{i + 1:05}", decode_image(data, field))
                         for i, (name, data, field) in enumerate(sources)])
            result = await state.run(lambda control: engine_extras.run(images, req, upscalers, control=control),
                                     f"api extras: {len(images)} image(s)")
            if result.errors:
                raise UserError("; ".join(f"{n}: {m}" for n, m in result.errors))
            fmt, quality = state.store.get("samples_format"), state.store.get("jpeg_quality")
            encoded = await run_in_threadpool(lambda: [encode_image(im, text, fmt, quality) for im, text in
                                                       zip(result.images, result.infotexts)])
        except Exception as err:
            raise http_error(err) from None
        info = html.escape(result.infotexts[0]) if result.infotexts else ""
        return (f"<p>{info}</p>" if info else ""), (encoded if body.show_extras_results else [])

    @route("/extra-single-image", ["POST"], response_model=ExtrasSingleImageResponse)
    async def extra_single_image(body: ExtrasSingleImageRequest):
        info, images = await run([("image", body.image, "image")], body)
        return {"html_info": info, "image": images[0] if images else None}

    @route("/extra-batch-images", ["POST"], response_model=ExtrasBatchImagesResponse)
    async def extra_batch_images(body: ExtrasBatchImagesRequest):
        sources = [(f.name, f.data, f"imageList.{i}.data") for i, f in enumerate(body.imageList)]
        info, images = await run(sources, body)
        return {"html_info": info, "images": images}
