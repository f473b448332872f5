"""Command-line flags, named as AUTOMATIC1111 users know them."""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python launch.py",
        description="Stable Diffusion web UI on diffusers. Launcher-only options: --run-tests (run pytest; "
                    "remaining arguments go to pytest), --torch-index-url URL (or TORCH_INDEX_URL: pick a "
                    "CUDA/ROCm torch build), --skip-install.",
    )
    net = p.add_argument_group("network and access")
    net.add_argument("--listen", action="store_true", help="serve on 0.0.0.0 (all interfaces) instead of 127.0.0.1")
    net.add_argument("--port", type=int, default=None, help="port (an error if it is taken; default 7860, or the next free one)")
    net.add_argument("--share", action="store_true", help="create a public Gradio share link")
    net.add_argument("--auth", default=None, help="user:pass[,user2:pass2] required for the UI and API")
    net.add_argument("--auth-file", default=None, help="file with user:pass entries (comma or line separated)")
    net.add_argument("--api-auth", default=None, help="user:pass[,...] HTTP Basic credentials for the API only")
    net.add_argument("--insecure-no-auth", action="store_true",
                     help="with --listen/--share, run WITHOUT a password (otherwise one is generated)")
    net.add_argument("--allowed-hosts", action="append", default=[], metavar="NAME[,NAME]",
                     help="more Host names to accept (a reverse proxy's name); requests naming any other host, "
                          "and state-changing requests from other origins, are refused (403)")
    net.add_argument("--api", action="store_true", help="serve the AUTOMATIC1111-compatible /sdapi/v1 API")
    net.add_argument("--nowebui", action="store_true", help="serve only the API, no web UI")
    net.add_argument("--autolaunch", action="store_true", help="open the UI in the default browser at start")

    models = p.add_argument_group("models")
    models.add_argument("--models-dir", action="append", default=[], type=Path,
                        help="an existing AUTOMATIC1111 models/ folder (Stable-diffusion/, VAE/, Lora/, ...); repeatable")
    models.add_argument("--ckpt-dir", action="append", default=[], type=Path,
                        help="extra folder with checkpoints; repeatable")
    models.add_argument("--ckpt", default=None, help="checkpoint to load at start (title, name or hash)")
    models.add_argument("--ckpt-cache", type=int, default=2, help="checkpoints kept in RAM for instant switching")
    models.add_argument("--no-hashing", action="store_true", help="do not compute sha256 of checkpoints")
    models.add_argument("--no-lora-merge", action="store_true",
                        help="keep LoRAs as separate layers instead of merging them into the weights while in use "
                             "(saves the RAM of the original weights' backup; slower steps)")
    models.add_argument("--sd2-prediction", choices=("epsilon", "v_prediction"), default="epsilon",
                        help="prediction type for SD 2.x checkpoints without a sidecar .yaml/.json")
    models.add_argument("--no-download", action="store_true",
                        help="never offer to download the default checkpoint on first start")

    dev = p.add_argument_group("device")
    dev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    dev.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                     help="weights dtype (auto: fp16/bf16 on GPU, bf16 on CPUs with AVX512-BF16/AMX, else fp32)")
    dev.add_argument("--lowvram", action="store_true", help="offload model parts to CPU between uses (small GPUs)")
    dev.add_argument("--xformers", action="store_true", help="use xformers attention when its kernel runs here")
    dev.add_argument("--vae-tiling", choices=("auto", "on", "off"), default="auto",
                     help="encode/decode large images in tiles: auto = when one pass would not fit in free memory")
    dev.add_argument("--compile", action="store_true",
                     help="torch.compile the UNet (first image at each size compiles; kernels are cached on disk)")

    out = p.add_argument_group("outputs and UI")
    out.add_argument("--outdir", type=Path, default=ROOT / "outputs", help="where images are saved")
    out.add_argument("--data-dir", type=Path, default=ROOT, help="base folder for models/, config/ and cache/")
    out.add_argument("--allow-any-batch-folder", action="store_true",
                     help="img2img batch folders typed in the UI may be anywhere (default: under --data-dir)")
    out.add_argument("--ui-debug-mode", action="store_true", help="start without loading a model")
    out.add_argument("--controlnet-units", type=int, default=3, help="ControlNet units shown in the UI")

    ext = p.add_argument_group("extensions")
    ext.add_argument("--extensions-dir", action="append", default=None, type=Path,
                     help="folder of extensions (default: extensions/ of the app); repeatable, the first one "
                          "receives extensions installed from the UI")
    ext.add_argument("--enable-insecure-extension-access", action="store_true",
                     help="allow installing extensions (git clone, pip) and writing presets from the UI, in every "
                          "mode: whoever can use the UI can then run code on this machine")
    ext.add_argument("--disable-all-extensions", action="store_true", help="start without loading any extension")
    from .limits import add_flags

    add_flags(p)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.port is not None and not (1 <= args.port <= 65535):
        build_parser().error(f"--port {args.port}: must be between 1 and 65535")
    return args
