"""Pydantic models of the /sdapi/v1 API (AUTOMATIC1111's names and shapes).

The generation request models are generated from `pipelines.params.declarations.PARAMS` (type, default, range,
length, choices, description, legacy aliases): a parameter declared there appears in the API, with its
limits, without being named here. Only the API's own fields (send_images, override_settings, init images
and so on: what is not a generation parameter) are declared in this module.
"""
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from pipelines.params.declarations import PARAMS, Param

MAX_INIT_IMAGES = 16
MAX_SCRIPT_ARGS = 256

_CONFIG = ConfigDict(extra="ignore", protected_namespaces=(), populate_by_name=True)


def _describe(p: Param) -> str:
    parts = [p.doc or p.label]
    choices = p.choice_list()
    if choices is not None:
        parts.append("one of: " + ", ".join(map(str, choices)))
    if p.aliases:
        parts.append("also accepted as: " + ", ".join(p.aliases))
    return ". ".join(parts)


def param_field(p: Param, *, name: str | None = None) -> tuple[Any, Any]:
    """(annotation, Field) for one declared parameter: optional (null → the declared default)."""
    annotation: Any = p.type
    default = p.default
    if p.type is tuple:  # a list of names (styles)
        annotation, default = list[str], list(p.default)
    kw: dict[str, Any] = {"default": default, "title": p.label, "description": _describe(p)}
    if p.minimum is not None:
        kw["ge"] = p.minimum
    if p.maximum is not None:
        kw["le"] = p.maximum
    if p.type in (str, tuple) and p.max_length is not None:
        kw["max_length"] = p.max_length
    if p.type is float:
        kw["allow_inf_nan"] = False
    if name is not None and name != p.name:  # a legacy alias: its own field, no default of its own
        kw["default"] = None
        kw["description"] = f"legacy name of {p.name}"
    return Optional[annotation], Field(**kw)


def param_fields(mode: str, params=PARAMS) -> dict[str, tuple[Any, Any]]:
    fields: dict[str, tuple[Any, Any]] = {}
    for p in params:
        if mode not in p.modes:
            continue
        fields[p.name] = param_field(p)
        for alias in p.aliases:
            fields[alias] = param_field(p, name=alias)
    return fields


def _common_api_fields() -> dict[str, tuple[Any, Any]]:
    return {
        "override_settings": (Optional[dict[str, Any]], Field(
            default=None, description="options applied for this request only: sd_model_checkpoint, sd_vae, "
                                      "CLIP_stop_at_last_layers (see GET /sdapi/v1/options)")),
        "override_settings_restore_afterwards": (Optional[bool], Field(
            default=True, description="switch back to the previous checkpoint/VAE after the request")),
        "send_images": (Optional[bool], Field(default=True, description="return the images in the response")),
        "save_images": (Optional[bool], Field(default=False, description="save the images in the outputs folder")),
        "alwayson_scripts": (Optional[dict[str, Any]], Field(
            default=None, description="{script name: {\"args\": [...]}}; scripts this build lacks are "
                                      "ignored and named in info.warnings")),
        "script_name": (Optional[str], Field(default=None, max_length=200,
                                             description="selectable script (none exist in this build)")),
        "script_args": (Optional[list[Any]], Field(default=None, max_length=MAX_SCRIPT_ARGS)),
        "do_not_save_samples": (Optional[bool], Field(default=None, description="ignored: use save_images")),
        "do_not_save_grid": (Optional[bool], Field(default=None, description="ignored: use save_images")),
    }


def _img2img_fields() -> dict[str, tuple[Any, Any]]:
    """A1111's img2img/inpaint request fields that are not generation parameters (those, such as resize_mode,
    mask_blur or inpaint_full_res, come from the declarations with everything else)."""
    return {
        "init_images": (Optional[list[str]], Field(default=None, max_length=MAX_INIT_IMAGES,
                                                   description="base64 images (data: URLs accepted)")),
        "mask": (Optional[str], Field(default=None, description="base64 mask: white = repaint")),
        "mask_blur_x": (Optional[int], Field(default=None, ge=0, le=64)),
        "mask_blur_y": (Optional[int], Field(default=None, ge=0, le=64)),
        "initial_noise_multiplier": (Optional[float], Field(default=None, ge=0, le=2, allow_inf_nan=False)),
        "image_cfg_scale": (Optional[float], Field(default=None, ge=0, le=30, allow_inf_nan=False)),
        "include_init_images": (Optional[bool], Field(default=False)),
    }


def _generation_model(name: str, mode: str, extra: dict[str, tuple[Any, Any]], params=PARAMS) -> type[BaseModel]:
    fields = param_fields(mode, params)
    fields.update({k: v for k, v in extra.items() if k not in fields})
    return create_model(name, __config__=_CONFIG, **fields)


Txt2ImgRequest = _generation_model("StableDiffusionProcessingTxt2Img", "txt2img", _common_api_fields())
Img2ImgRequest = _generation_model("StableDiffusionProcessingImg2Img", "img2img",
                                   {**_img2img_fields(), **_common_api_fields()})


def request_models(params) -> tuple[type[BaseModel], type[BaseModel]]:
    """(txt2img, img2img) request models for `params` = PARAMS + extensions' parameters
    (`HookRegistry.all_params()`); the module-level ones are PARAMS only."""
    return (_generation_model("StableDiffusionProcessingTxt2Img", "txt2img", _common_api_fields(), params),
            _generation_model("StableDiffusionProcessingImg2Img", "img2img",
                              {**_img2img_fields(), **_common_api_fields()}, params))


API_ONLY_FIELDS = frozenset({**_common_api_fields(), **_img2img_fields()})


class GenerationResponse(BaseModel):
    images: Optional[list[str]] = Field(default=None, title="Image",
                                        description="The generated images in base64 format.")
    parameters: dict
    info: str = Field(description="JSON string: seeds, infotexts, model, warnings, ...")


class TextToImageResponse(GenerationResponse):
    pass


class ImageToImageResponse(GenerationResponse):
    pass


class PNGInfoRequest(BaseModel):
    model_config = _CONFIG
    image: str = Field(title="Image", description="The base64 encoded image (PNG, JPEG or WEBP)")


class PNGInfoResponse(BaseModel):
    info: str = Field(title="Image info", description="The infotext (generation parameters) of the image")
    items: dict = Field(title="Items", description="The other metadata items the image had")
    parameters: dict = Field(title="Parameters", description="The infotext parsed into fields")
    reproduce: Optional[dict] = Field(
        default=None, title="Reproduce",
        description="How to make the image again here: source (the tool that made it, null for A1111/Forge), "
                    "exact, checkpoint and vae (local names found by name or hash), differences (missing models, "
                    "unsupported fields, samplers without an exact counterpart), infotext (with local names)")


class ProgressResponse(BaseModel):
    progress: float = Field(title="Progress", description="The progress with a range of 0 to 1")
    eta_relative: float = Field(title="ETA in secs")
    state: dict = Field(title="State", description="The current state snapshot")
    current_image: Optional[str] = Field(default=None, title="Current image",
                                         description="The live preview in base64 format")
    textinfo: Optional[str] = Field(default=None, title="Info text")


class InterrogateRequest(BaseModel):
    model_config = _CONFIG
    image: str = Field(default="", title="Image", description="base64 image")
    model: str = Field(default="clip", title="Model", max_length=100,
                       description="clip (CLIP interrogation), or a mode: caption, fast, classic, best, negative")
    clip_model: Optional[str] = Field(default=None, max_length=200, description="CLIP model name (optional)")
    caption_model: Optional[str] = Field(default=None, max_length=200, description="caption model name (optional)")


class InterrogateResponse(BaseModel):
    caption: Optional[str] = Field(default=None, title="Caption")


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: Optional[list[str]] = None
    default_rho: Optional[float] = None
    need_inner_model: Optional[bool] = None


class UpscalerItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    name: str
    model_name: Optional[str] = None
    model_path: Optional[str] = None
    model_url: Optional[str] = None
    scale: Optional[float] = None


class LatentUpscalerModeItem(BaseModel):
    name: str


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    title: str
    model_name: str
    hash: Optional[str] = None
    sha256: Optional[str] = None
    filename: str
    config: Optional[str] = None


class SDVaeItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_name: str
    filename: str


class HypernetworkItem(BaseModel):
    name: str
    path: Optional[str] = None


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: Optional[str] = None


class RealesrganItem(BaseModel):
    name: str
    path: Optional[str] = None
    scale: Optional[int] = None


class PromptStyleItem(BaseModel):
    name: str
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None


class LoraItem(BaseModel):
    name: str
    alias: Optional[str] = None
    path: Optional[str] = None
    metadata: dict = Field(default_factory=dict)


class EmbeddingItem(BaseModel):
    step: Optional[int] = None
    sd_checkpoint: Optional[str] = None
    sd_checkpoint_name: Optional[str] = None
    shape: int
    vectors: int


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class MemoryResponse(BaseModel):
    ram: dict
    cuda: dict


class ScriptsList(BaseModel):
    txt2img: Optional[list] = None
    img2img: Optional[list] = None


class ControlNetModelList(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_list: list[str]


class ControlNetModuleList(BaseModel):
    module_list: list[str]
    module_detail: dict = Field(default_factory=dict)
