"""Device, precision and attention policy, decided once per manager and logged."""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from .vae_tiling import MODES

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class DevicePolicy:
    device: str            # "cuda", "cuda:1", "mps", "cpu"
    dtype_name: str        # "float32", "float16", "bfloat16"
    vae_dtype_name: str    # the VAE stays in fp32 under fp16: SD VAEs overflow to NaN in fp16
    attention: str         # "xformers" or "sdpa"
    lowvram: bool = False
    compile: bool = False  # torch.compile the UNet (kernels cached on disk by Inductor across runs)
    vae_tiling: str = "auto"   # pipelines.core.vae_tiling.MODES: tiles when one pass would not fit ("auto")

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def vae_dtype(self):
        import torch

        return getattr(torch, self.vae_dtype_name)

    def describe(self) -> str:
        return f"device={self.device} dtype={self.dtype_name} vae={self.vae_dtype_name} attention={self.attention}" + (
            " lowvram" if self.lowvram else "") + (" compile" if self.compile else "") + (
            f" vae_tiling={self.vae_tiling}" if self.vae_tiling != "auto" else "")


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested and requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: CUDA is not available on this machine (use --device cpu)")
        if requested == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("--device mps: Apple MPS is not available on this machine (use --device cpu)")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_bf16() -> bool:
    """bf16 matmuls are fast on CPUs with AVX512-BF16 or AMX; elsewhere they are emulated and slow."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_dtype(device: str, precision: str = "auto") -> str:
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision]
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "bfloat16" if cpu_has_bf16() else "float32"


def xformers_works(device: str) -> bool:
    """xformers imports on CPU but has no operator there: run its kernel once on the device to know."""
    if not device.startswith("cuda"):
        return False
    try:
        import torch
        import xformers.ops

        q = torch.zeros(1, 8, 1, 64, device=device, dtype=torch.float16)
        xformers.ops.memory_efficient_attention(q, q, q)
        return True
    except Exception as err:  # any failure means "don't use it"; the reason is logged
        log.info("xformers unavailable on %s: %s", device, err)
        return False


def forget_xformers_load_error() -> None:
    """Drop the traceback of the exception xformers keeps when its C++ kernels fail to load
    (`xformers._cpp_lib._cpp_library_load_exception`, e.g. a wheel built for another torch). Through the
    frames' f_back links that traceback pins the final locals of every caller of whoever imported xformers
    first: diffusers imports it lazily inside our first checkpoint load, so the first checkpoint loaded was
    never freed (measured, bench/memory.py: +2.1 GB RSS for good after switching away from an SD1.5
    model). The exception and its message stay."""
    exc = getattr(sys.modules.get("xformers._cpp_lib"), "_cpp_library_load_exception", None)
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


def faster_attention(device: str, dtype_name: str, repeat: int = 5) -> str:
    """Quick probe: time SDPA and xformers on an SD1.5-like attention (64x64 latents, 8 heads of 40)."""
    import torch
    import torch.nn.functional as F
    import xformers.ops

    dtype = getattr(torch, dtype_name)
    q = torch.randn(2, 4096, 8, 40, device=device, dtype=dtype)

    def run(fn) -> float:
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    t_sdpa = run(lambda: F.scaled_dot_product_attention(q.transpose(1, 2), q.transpose(1, 2), q.transpose(1, 2)))
    t_xf = run(lambda: xformers.ops.memory_efficient_attention(q, q, q))
    log.info("attention probe on %s: sdpa %.2f ms, xformers %.2f ms", device, t_sdpa * 1e3 / repeat,
             t_xf * 1e3 / repeat)
    return "xformers" if t_xf < 0.95 * t_sdpa else "sdpa"


def make_policy(device: str | None = None, precision: str = "auto", attention: str = "auto",
                lowvram: bool = False, compile: bool = False, vae_tiling: str = "auto") -> DevicePolicy:
    """attention: "auto" (SDPA unless xformers runs here and a quick probe finds it faster),
    "xformers" (whenever its kernel runs here) or "sdpa"."""
    if vae_tiling not in MODES:
        raise ValueError(f"VAE tiling {vae_tiling!r}: one of {', '.join(MODES)}")
    dev = pick_device(device)
    dtype = pick_dtype(dev, precision)
    vae_dtype = "float32" if dtype == "float16" else dtype
    attn = "sdpa"
    if attention in ("auto", "xformers") and xformers_works(dev):
        attn = "xformers" if attention == "xformers" else faster_attention(dev, dtype)
    elif attention == "xformers":
        log.warning("--xformers requested but its kernel does not run on %s; using PyTorch SDPA", dev)
    policy = DevicePolicy(dev, dtype, vae_dtype, attn, lowvram and dev.startswith("cuda"),
                          compile and not lowvram, vae_tiling)
    log.info("device policy: %s", policy.describe())
    return policy
