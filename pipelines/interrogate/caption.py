"""The caption model: BLIP (transformers `BlipForConditionalGeneration` + `BlipProcessor`), loaded
from a local folder only (`sources.ModelSources.caption` finds or downloads it first)."""
from __future__ import annotations

import time

from ..core.errors import ModelLoadError
from .sources import CaptionSource


class CaptionModel:
    def __init__(self, source: CaptionSource, *, device: str = "cpu", dtype: str | None = None):
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.source = source
        self.name = source.name
        self.dtype_name = dtype or ("float16" if device.startswith("cuda") else "float32")
        t0 = time.perf_counter()
        try:
            self.processor = BlipProcessor.from_pretrained(str(source.folder), local_files_only=True)
            self.model = BlipForConditionalGeneration.from_pretrained(
                str(source.folder), local_files_only=True, dtype=getattr(torch, self.dtype_name))
        except Exception as err:   # broken folder: name it
            raise ModelLoadError(f"could not load caption model {source.name} from {source.folder} "
                                 f"({type(err).__name__}: {err})") from err
        self.model.eval().requires_grad_(False)
        self.load_seconds = time.perf_counter() - t0
        self.device = "cpu"
        self.to(device)

    def to(self, device: str) -> "CaptionModel":
        self.model.to(device)
        self.device = device
        return self

    def caption(self, image, *, max_tokens: int = 32, min_tokens: int = 0, num_beams: int = 1) -> str:
        """One caption for a PIL image (greedy by default, like clip-interrogator)."""
        import torch

        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, dtype=self.model.dtype)
        kwargs = dict(max_new_tokens=max_tokens, num_beams=num_beams)
        if min_tokens:
            kwargs["min_new_tokens"] = min_tokens
        with torch.inference_mode():
            tokens = self.model.generate(pixel_values=pixels, **kwargs)
        return self.processor.batch_decode(tokens, skip_special_tokens=True)[0].strip()
