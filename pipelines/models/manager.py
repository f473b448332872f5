"""The one object that owns loaded models: which checkpoint, VAE and mode pipelines are live, and where.

- An LRU cache of up to `cache_size` checkpoints in RAM; the active one sits on the device. Switching
  to a cached checkpoint reads nothing from disk (cached ones wait in CPU RAM when the device is a GPU).
- txt2img / img2img / inpaint pipelines are built from the active checkpoint's components with
  diffusers' `from_pipe`: a mode change never copies or reloads weights.
- One lock serialises device work: a load requested while a generation runs waits for it; a failed
  load leaves the previous model active (when the cache had to unload it first, it is loaded again).
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from . import detect, loading
from ..controlnet.cache import ControlNetCache
from ..core.devices import DevicePolicy, forget_xformers_load_error, make_policy
from ..core.errors import UserError
from .loading import LoadedCheckpoint
from .files import ModelFile, ModelRegistry

log = logging.getLogger(__name__)

MODES = ("txt2img", "img2img", "inpaint")
ProgressListener = Callable[[str, float], None]

_MODE_CLASSES = {
    (False, "txt2img"): "StableDiffusionPipeline",
    (False, "img2img"): "StableDiffusionImg2ImgPipeline",
    (False, "inpaint"): "StableDiffusionInpaintPipeline",
    (True, "txt2img"): "StableDiffusionXLPipeline",
    (True, "img2img"): "StableDiffusionXLImg2ImgPipeline",
    (True, "inpaint"): "StableDiffusionXLInpaintPipeline",
}


class PipelineManager:
    def __init__(self, registry: ModelRegistry, *, policy: DevicePolicy | None = None, cache_size: int = 2,
                 config_root: Path | None = None, sd2_prediction: str = "epsilon", controlnet_cache_size: int = 3):
        self.registry = registry
        self.policy = policy or make_policy()
        self.cache_size = max(1, int(cache_size))
        self.config_root = Path(config_root) if config_root else loading.CONFIG_ROOT
        self.sd2_prediction = sd2_prediction
        self.lock = threading.RLock()
        self._cache: OrderedDict[str, LoadedCheckpoint] = OrderedDict()
        self.active: LoadedCheckpoint | None = None
        self._listeners: list[ProgressListener] = []
        self.status = "no model loaded"
        self._tiny_vaes: dict[str, object] = {}
        self.disk_loads = 0   # checkpoint reads from disk (tests and the benchmark check cache hits)
        # ControlNet models (discovery + loaded modules); pipelines with them come from the active checkpoint
        self.controlnets = ControlNetCache(registry.paths, self.policy, self.config_root, controlnet_cache_size)

    # ------------------------------------------------------------------ progress
    def add_listener(self, fn: ProgressListener) -> None:
        self._listeners.append(fn)

    def _progress(self, stage: str, fraction: float) -> None:
        self.status = f"{stage} ({fraction:.0%})" if fraction < 1 else stage
        for fn in list(self._listeners):
            try:
                fn(stage, fraction)
            except Exception:  # a broken UI listener must not break loading
                log.exception("progress listener failed")

    # ------------------------------------------------------------------ checkpoints
    @property
    def loaded_titles(self) -> list[str]:
        return [c.info.title for c in self._cache.values()]

    def load(self, query: str | ModelFile) -> LoadedCheckpoint:
        """Make `query` (title, name or hash) the active checkpoint; from the RAM cache when there."""
        mf = query if isinstance(query, ModelFile) else self.registry.find_checkpoint(query)
        key = str(mf.path.resolve())
        with self.lock:
            if self.active is not None and self.active.info.path.resolve() == mf.path.resolve():
                return self.active
            cached = self._cache.get(key)
            if cached is not None:
                self._progress(f"switching to {mf.name} (cached)", 0.5)
                self._cache.move_to_end(key)
                self._activate(cached)
                self._progress(f"{mf.title} ready", 1.0)
                return cached
            return self._load_from_disk(mf, key)

    def _load_from_disk(self, mf: ModelFile, key: str) -> LoadedCheckpoint:
        self._progress(f"loading {mf.name}", 0.0)
        dropped: ModelFile | None = None
        try:
            arch = loading.inspect_checkpoint(mf, self.sd2_prediction)
            self.registry.ensure_hash(mf)
            dropped = self._make_room()

            def sub_progress(stage: str, frac: float) -> None:
                self._progress(f"loading {mf.name}: {stage}", frac * 0.9)

            loaded = loading.load_checkpoint(mf, arch=arch, config_root=self.config_root, dtype=self.policy.dtype,
                                             progress=sub_progress, paths=self.registry.paths,
                                             modules=self.additional_modules)
        except UserError:
            if dropped is not None and self.active is None:
                self._restore(dropped)
            self._progress(self._ready_status(), 1.0)
            raise
        finally:
            forget_xformers_load_error()   # this load may be the one that imported xformers
        self.disk_loads += 1
        self._cache[key] = loaded
        self._activate(loaded)
        self._evict()
        self._progress(f"{mf.title} ready ({loaded.load_seconds:.1f}s)", 1.0)
        log.info("loaded %s as %s in %.1fs", mf.title, arch.label, loaded.load_seconds)
        return loaded

    def _make_room(self) -> ModelFile | None:
        """Unload least-recently-used checkpoints until one more fits the cache, *before* loading it:
        loading first holds cache_size + 1 checkpoints at once, and the allocator keeps that high-water
        mark (bench/memory.py, one-checkpoint cache, SD1.5: settled RSS after 10 cold switches +4.1 GB
        loading first, +2.2 GB unloading first; the rest was the xformers pin, see
        `forget_xformers_load_error`). Returns the
        active checkpoint's file when it had to go, so a failed load can bring it back."""
        dropped = None
        while self._cache and len(self._cache) >= self.cache_size:
            key, old = self._cache.popitem(last=False)
            if old is self.active:
                dropped = old.info
                self.active = None
            log.info("unloaded %s from the RAM cache", old.info.title)
            del old
        if dropped is not None or not self._cache:
            self._free_memory()
        return dropped

    def _restore(self, mf: ModelFile) -> None:
        """Bring back the checkpoint `_make_room` unloaded for a load that then failed."""
        try:
            self._load_from_disk(mf, str(mf.path.resolve()))
        except UserError:
            log.exception("could not reload %s after a failed checkpoint load", mf.title)

    def _ready_status(self) -> str:
        return f"{self.active.info.title} ready" if self.active else "no model loaded"

    def _activate(self, loaded: LoadedCheckpoint) -> None:
        previous = self.active
        if previous is not None and previous is not loaded and self._on_gpu:
            self._place(previous, "cpu")
        self._place(loaded, self.policy.device)
        self.active = loaded

    @property
    def _on_gpu(self) -> bool:
        return not self.policy.device.startswith("cpu")

    def _place(self, loaded: LoadedCheckpoint, device: str) -> None:
        pipe = loaded.pipe
        if self.policy.compile and device == self.policy.device and hasattr(pipe, "unet") \
                and not getattr(pipe.unet, "_compiled", False):   # (Flux: its transformer is not compiled yet)
            # In place (nn.Module.compile), so every mode pipeline sharing this UNet runs the compiled one.
            # The first generation at a new size pays the compilation; Inductor caches kernels on disk.
            if not self._on_gpu:
                # Measured (bench/speed.py --compile, 2-core CPU, SD1.5 UNet 256x256 bf16): Inductor alone
                # 0.81x eager; with freezing (weights folded in as constants, convolutions prepacked for
                # oneDNN) 1.64x. Frozen weights must not change in place afterwards: LoRAs are peft
                # adapters (new modules, so a recompile), never fused into the UNet.
                import torch._inductor.config as inductor_config

                inductor_config.freezing = True
                pipe.unet._weights_frozen = True   # pipelines.prompts.networks: no fusing LoRAs into it
            pipe.unet.compile(mode="max-autotune-no-cudagraphs" if self._on_gpu else "default")
            pipe.unet._compiled = True
        if not self._on_gpu:
            # Measured (bench/speed.py, 2-core CPU): channels_last makes the VAE decode 8-36% faster but the
            # UNet step 7-20% slower, so only the VAE gets it.
            import torch

            if pipe.vae is not None:
                pipe.vae.to(memory_format=torch.channels_last)
            return  # loaded on the CPU in the policy's dtype already: nothing to move
        if device != "cpu" and self.policy.lowvram:
            pipe.enable_model_cpu_offload(device=device)
            return
        pipe.to(device)
        if pipe.vae is not None and self.policy.vae_dtype != self.policy.dtype:
            pipe.vae.to(dtype=self.policy.vae_dtype)
        if device != "cpu" and self.policy.attention == "xformers":
            pipe.enable_xformers_memory_efficient_attention()

    def _evict(self) -> None:
        while len(self._cache) > self.cache_size:
            key, old = next(iter(self._cache.items()))
            if old is self.active:
                self._cache.move_to_end(key)
                continue
            del self._cache[key]
            log.info("unloaded %s from the RAM cache", old.info.title)
            del old
            self._free_memory()

    def _free_memory(self) -> None:
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def unload(self) -> None:
        """Drop every loaded checkpoint (A1111's unload-checkpoint)."""
        with self.lock:
            self._cache.clear()
            self.active = None
            self.controlnets.clear()
            self._free_memory()
            self._progress("no model loaded", 1.0)

    def require_active(self) -> LoadedCheckpoint:
        if self.active is None:
            names = ", ".join(m.name for m in self.registry.checkpoints[:5])
            hint = f"choose one of: {names}" if names else \
                f"no checkpoints found; put a .safetensors file in {self.registry.paths.dirs('checkpoints')[0]}"
            raise UserError(f"no checkpoint is loaded; {hint}")
        return self.active

    # ------------------------------------------------------------------ tiny VAE (TAESD)
    TINY_VAE_FOLDERS = {detect.SD1: "taesd", detect.SD2: "taesd", detect.SDXL: "taesdxl", detect.SDXL_REFINER: "taesdxl",
                        detect.FLUX: "taef1"}

    def tiny_vae(self):
        """The active family's TAESD decoder (diffusers AutoencoderTiny folder in models/VAE-approx/taesd or
        taesdxl), loaded once and kept; None when its weights are not there."""
        loaded = self.require_active()
        name = self.TINY_VAE_FOLDERS[loaded.arch.family]
        if name in self._tiny_vaes:
            return self._tiny_vaes[name]
        vae = None
        for folder in self.registry.paths.dirs("vae_approx"):
            if (folder / name / "config.json").is_file():
                from diffusers import AutoencoderTiny

                try:
                    vae = AutoencoderTiny.from_pretrained(folder / name, local_files_only=True,
                                                          torch_dtype=self.policy.vae_dtype)
                except Exception as err:  # a broken TAESD folder means "use the full VAE", said once in the log
                    log.warning("could not load %s: %s", folder / name, err)
                    continue
                vae.to(self.policy.device)
                break
        self._tiny_vaes[name] = vae
        return vae

    # ------------------------------------------------------------------ Forge's "VAE / Text Encoder"
    additional_modules: tuple[Path, ...] = ()

    def module_files(self) -> list[Path]:
        """VAE and text encoder files a Flux checkpoint can take (models/VAE, models/text_encoder)."""
        return [f for kind in ("vae", "text_encoder") for d in self.registry.paths.dirs(kind) if d.is_dir()
                for f in sorted(d.rglob("*.safetensors"))]

    def set_additional_modules(self, names) -> list[str]:
        """Forge's `forge_additional_modules`: VAE / text encoder files (names or paths under models/VAE and
        models/text_encoder) that Flux checkpoints load with instead of their own or the automatic choice.
        Flux checkpoints loaded with other modules are dropped from the cache (the next load reads them again)."""
        from .flux import module_kind

        available = {f.name: f for f in self.module_files()} | {str(f): f for f in self.module_files()}
        chosen = []
        for name in names or ():
            path = available.get(str(name)) or available.get(Path(str(name)).name)
            if path is None:
                raise UserError(f"forge_additional_modules: {name!r} not found in models/VAE or models/text_encoder")
            module_kind(path)   # refuses a file that is no VAE / text encoder
            chosen.append(path)
        with self.lock:
            if tuple(chosen) != self.additional_modules:
                self.additional_modules = tuple(chosen)
                for key in [k for k, c in self._cache.items() if c.arch.family == detect.FLUX]:
                    if self._cache[key] is self.active:
                        self.active = None
                    del self._cache[key]
                self._free_memory()
        return [p.name for p in chosen]

    # ------------------------------------------------------------------ VAE
    def set_vae(self, name: str | None) -> str | None:
        """'Automatic' → sidecar `model.vae.*` else the checkpoint's own; 'None' → own; else models/VAE/name."""
        with self.lock:
            loaded = self.require_active()
            path: Path | None = None
            label: str | None = None
            if name in (None, "", "None"):
                path = None
            elif name == "Automatic":
                path = self.registry.sidecar_vae(loaded.info)
                label = path.name if path else None
            else:
                vae_file = self.registry.find_vae(name)
                path, label = vae_file.path, vae_file.name
            if label == loaded.vae_name:
                return label
            if path is None:
                vae = loaded.own_vae
            else:
                vae = loading.load_vae(path, loaded.arch.family, config_root=self.config_root,
                                       dtype=self.policy.vae_dtype)
                vae.to(self.policy.device)
            loaded.pipe.register_modules(vae=vae)
            for pipe in loaded.modes.values():
                pipe.register_modules(vae=vae)
            loaded.vae_name = label
            return label

    # ------------------------------------------------------------------ modes
    def pipeline(self, mode: str = "txt2img"):
        """The active checkpoint's pipeline for `mode`, sharing its loaded components."""
        if mode not in MODES:
            raise UserError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        with self.lock:
            loaded = self.require_active()
            pipe = loaded.modes.get(mode)
            if pipe is None:
                pipe = self._derive(loaded, mode)
                loaded.modes[mode] = pipe
            return pipe

    def _derive(self, loaded: LoadedCheckpoint, mode: str):
        import diffusers

        xl = loaded.arch.family in (detect.SDXL, detect.SDXL_REFINER)
        base = loaded.pipe
        if loaded.arch.family in detect.FLOW_FAMILIES:
            if mode != "txt2img":
                raise UserError(f"{loaded.info.name} is {loaded.arch.label}: {mode} is not available for this family "
                                "yet (txt2img only)")
            return base
        if loaded.arch.family == detect.SDXL_REFINER and mode == "txt2img":
            raise UserError(f"{loaded.info.name} is an SDXL refiner: it only works in img2img/inpaint")
        if loaded.arch.inpaint and mode != "inpaint":
            # A 9-channel inpainting UNet cannot run the plain pipelines; the inpaint pipeline with a
            # full mask (txt2img) or the caller's mask serves every mode, as in A1111.
            return base
        cls = getattr(diffusers, _MODE_CLASSES[(xl, mode)])
        if type(base) is cls:
            return base
        pipe = loading.from_pipe(cls, base)   # not cls.from_pipe: it casts the shared modules to float32
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @contextmanager
    def session(self, mode: str = "txt2img") -> Iterator[object]:
        """Hold the device for one job: yields the pipeline for `mode`."""
        with self.lock:
            yield self.pipeline(mode)

    def info(self) -> dict:
        a = self.active
        return {
            "checkpoint": a.info.title if a else None,
            "architecture": a.arch.label if a else None,
            "vae": a.vae_name if a else None,
            "cached": self.loaded_titles,
            "device": self.policy.describe(),
            "status": self.status,
            "time": time.time(),
        }
