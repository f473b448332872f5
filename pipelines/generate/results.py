"""What a generation job gives back (`GenerationResult`) and how it reports progress while it runs
(`StepTracker`): shared by txt2img, img2img and the extensions' hooks, so none of them imports the engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.jobs import JobControl
from ..params.declarations import GenerationRequest
from .preview import approx_rgb


@dataclass
class GenerationResult:
    images: list = field(default_factory=list)            # PIL images, in order
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)       # saved files (empty when not saved)
    grid_path: Path | None = None
    request: GenerationRequest | None = None
    interrupted: bool = False
    skipped: int = 0
    seconds: float = 0.0
    steps_run: int = 0
    notices: list[str] = field(default_factory=list)   # things the user should know (e.g. "mask resized")
    control_maps: list = field(default_factory=list)   # ControlNet maps as applied (PIL), one per unit

    def info(self) -> dict[str, Any]:
        """A1111's `info` object (the API returns it as a JSON string)."""
        r = self.request
        return {
            "prompt": r.prompt if r else "",
            "all_prompts": [r.prompt] * len(self.images) if r else [],
            "negative_prompt": r.negative_prompt if r else "",
            "all_negative_prompts": [r.negative_prompt] * len(self.images) if r else [],
            "seed": self.seeds[0] if self.seeds else None,
            "all_seeds": self.seeds,
            "subseed": self.subseeds[0] if self.subseeds else None,
            "all_subseeds": self.subseeds,
            "subseed_strength": r.subseed_strength if r else 0,
            "width": r.width if r else None,
            "height": r.height if r else None,
            "sampler_name": r.sampler_name if r else None,
            "cfg_scale": r.cfg_scale if r else None,
            "steps": r.steps if r else None,
            "batch_size": r.batch_size if r else None,
            "clip_skip": r.clip_skip if r else None,
            "infotexts": self.infotexts,
            "interrupted": self.interrupted,
        }


class StepTracker:
    """Counts sampler steps over the whole job for progress, previews, ETA and interrupt checks."""

    def __init__(self, control: JobControl | None, total_steps: int, images: int, sdxl: bool, preview_every: int,
                 tiny_vae=None):
        self.control = control
        self.total = max(1, total_steps)
        self.done = 0
        self.images = images
        self.sdxl = sdxl
        self.preview_every = preview_every
        self.tiny_vae = tiny_vae   # TAESD when its weights are there: a real preview; else the linear one

    def preview(self, latents: torch.Tensor):
        if self.tiny_vae is None:
            return approx_rgb(latents, self.sdxl)
        from PIL import Image

        with torch.no_grad():
            rgb = self.tiny_vae.decode(latents[:1].to(self.tiny_vae.dtype), return_dict=False)[0][0]
        arr = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(arr, "RGB")

    def step(self, latents: torch.Tensor | None, step: int, steps: int, image: int, label: str) -> None:
        self.done += 1
        if self.control is None:
            return
        changes: dict[str, Any] = dict(fraction=min(1.0, self.done / self.total), step=step + 1, steps=steps,
                                       image=image, images=self.images,
                                       text=f"{label} step {step + 1}/{steps}, image {image + 1}/{self.images}")
        if latents is not None and self.preview_every and ((step + 1) % self.preview_every == 0):
            changes["preview"] = self.preview(latents)
        self.control.update(**changes)
        self.control.check()
