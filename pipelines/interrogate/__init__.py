"""CLIP interrogation: an image → a prompt that would recreate it (caption + CLIP-ranked phrases).

    from pipelines.interrogate import Interrogator, InterrogateOptions
    it = Interrogator.from_paths(model_paths, device="cuda")   # or Interrogator([dir], cache_dir=...)
    result = it.interrogate(pil_image, mode="best")           # MODES: caption fast classic best negative
    result.prompt, result.tops["artists"], result.similarity
    it.release_device()                                       # generation needs the GPU

Modules: `sources` (models/interrogate layout, Hub downloads, offline errors), `clip_model`
(open_clip wrapper, fast exact text encoding), `caption` (BLIP), `labels` (label lists and the
embedding cache), `interrogator` (the modes). Importing this package loads no model and imports
no torch.
"""
from .interrogator import (MODES, InterrogateOptions, InterrogationResult, Interrogator,
                           InterrogatorCounters)
from .labels import TABLES, load_label_lists
from .sources import (CAPTION_MODELS, CLIP_MODELS, DEFAULT_CAPTION, DEFAULT_CLIP, ModelSources,
                      clip_for_family)

__all__ = [
    "MODES", "TABLES", "CAPTION_MODELS", "CLIP_MODELS", "DEFAULT_CAPTION", "DEFAULT_CLIP",
    "InterrogateOptions", "InterrogationResult", "Interrogator", "InterrogatorCounters", "ModelSources",
    "clip_for_family", "load_label_lists",
]
