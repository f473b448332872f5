"""A1111's "X/Y/Z plot" script arguments (`script_name`/`script_args` in the API) → this extension's parameters.

A1111 1.10's xyz_grid script takes, in order: x_type, x_values, x_values_dropdown, y_type, y_values,
y_values_dropdown, z_type, z_values, z_values_dropdown, draw_legend, include_lone_images, include_sub_grids,
no_fixed_seeds, vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode. An axis type is an index
into the script's axis list as shown in that mode (txt2img-only and img2img-only axes are left out of the
other mode's list), or the axis label itself. For an axis with a choice list, A1111 reads the values from the
dropdown list unless csv_mode is set. The labels below are A1111 1.10's, in its order; each names the
declared parameter it sets here (None: not in this app, refused with a message).
"""
from __future__ import annotations

from typing import Any, Callable

from pipelines.core.errors import ParameterError

from .axes import NOTHING, PROMPT_SR, quote_values

BOTH, TXT2IMG, IMG2IMG = "both", "txt2img", "img2img"
# (A1111 label, where it is offered, our parameter name | NOTHING | PROMPT_SR | None)
A1111_AXES: tuple[tuple[str, str, str | None], ...] = (
    ("Nothing", BOTH, NOTHING), ("Seed", BOTH, "seed"), ("Var. seed", BOTH, "subseed"),
    ("Var. strength", BOTH, "subseed_strength"), ("Steps", BOTH, "steps"), ("Hires steps", TXT2IMG, "hr_second_pass_steps"),
    ("CFG Scale", BOTH, "cfg_scale"), ("Image CFG Scale", IMG2IMG, "image_cfg_scale"), ("Prompt S/R", BOTH, PROMPT_SR),
    ("Prompt order", BOTH, None), ("Sampler", TXT2IMG, "sampler_name"), ("Hires sampler", TXT2IMG, "hr_sampler_name"),
    ("Sampler", IMG2IMG, "sampler_name"), ("Checkpoint name", BOTH, "sd_model_checkpoint"),
    ("Negative Guidance minimum sigma", BOTH, "s_min_uncond"), ("Sigma Churn", BOTH, "s_churn"),
    ("Sigma min", BOTH, "s_tmin"), ("Sigma max", BOTH, "s_tmax"), ("Sigma noise", BOTH, "s_noise"),
    ("Schedule type", BOTH, "scheduler"), ("Schedule min sigma", BOTH, "sigma_min"),
    ("Schedule max sigma", BOTH, "sigma_max"), ("Schedule rho", BOTH, "rho"), ("Eta", BOTH, "eta"),
    ("Clip skip", BOTH, "clip_skip"), ("Denoising", BOTH, "denoising_strength"),
    ("Initial noise multiplier", BOTH, "initial_noise_multiplier"), ("Extra noise", BOTH, None),
    ("Hires upscaler", TXT2IMG, "hr_upscaler"), ("Cond. Image Mask Weight", IMG2IMG, "inpainting_mask_weight"),
    ("VAE", BOTH, "sd_vae"), ("Styles", BOTH, None), ("UniPC Order", BOTH, None), ("Face restore", BOTH, None),
    ("Token merging ratio", BOTH, None), ("Token merging ratio high-res", BOTH, None),
    ("Always discard next-to-last sigma", BOTH, None), ("SGM noise multiplier", BOTH, None),
    ("Refiner checkpoint", BOTH, None), ("Refiner switch at", BOTH, None), ("RNG source", BOTH, "randn_source"),
)
ARG_NAMES = ("x_type", "x_values", "x_values_dropdown", "y_type", "y_values", "y_values_dropdown", "z_type",
             "z_values", "z_values_dropdown", "draw_legend", "include_lone_images", "include_sub_grids",
             "no_fixed_seeds", "vary_seeds_x", "vary_seeds_y", "vary_seeds_z", "margin_size", "csv_mode")


def axes_for(mode: str) -> list[tuple[str, str | None]]:
    """A1111's axis list as its dropdown shows it in `mode`: (label, our parameter name or marker)."""
    return [(label, name) for label, where, name in A1111_AXES if where in (BOTH, mode)]


def make_converter(axis_name_of: Callable[[str], str | None]) -> Callable[[list, str], dict[str, Any]]:
    """`axis_name_of(param name)` gives this extension's axis name for a declared parameter (None when the
    parameter is not declared in this build)."""

    def axis_type(value: Any, mode: str, which: str) -> tuple[str, str | None]:
        table = axes_for(mode)
        if isinstance(value, bool):
            raise ParameterError(f"{which}_type", f"expected an axis index or label, got {value!r}")
        if isinstance(value, int):
            if not 0 <= value < len(table):
                raise ParameterError(f"{which}_type", f"axis index {value} is outside A1111's {len(table)} {mode} axes")
            return table[value]
        for label, name in table:
            if str(value).strip().lower() == label.lower():
                return label, name
        raise ParameterError(f"{which}_type", f"unknown axis {value!r}")

    def to_values(args: list, mode: str) -> dict[str, Any]:
        if len(args) > len(ARG_NAMES):
            raise ParameterError("script_args", f"X/Y/Z plot takes at most {len(ARG_NAMES)} arguments, got {len(args)}")
        given = dict(zip(ARG_NAMES, args))
        csv_mode = bool(given.get("csv_mode", False))
        out: dict[str, Any] = {}
        for which in "xyz":
            label, name = axis_type(given.get(f"{which}_type", 0), mode, which)
            if name is None:
                raise ParameterError(f"{which}_type", f"the {label!r} axis is not available in this app")
            ours = name if name in (NOTHING, PROMPT_SR) else axis_name_of(name)
            if ours is None:
                raise ParameterError(f"{which}_type", f"the {label!r} axis is not available in this app")
            dropdown = given.get(f"{which}_values_dropdown") or []
            values = given.get(f"{which}_values") or ""
            if dropdown and not csv_mode:
                values = quote_values([str(v) for v in dropdown])
            out[f"xyz_{which}_type"] = ours
            out[f"xyz_{which}_values"] = "" if ours == NOTHING else str(values)
        out["xyz_draw_legend"] = bool(given.get("draw_legend", True))
        out["xyz_include_images"] = bool(given.get("include_lone_images", False))
        out["xyz_keep_random_seeds"] = bool(given.get("no_fixed_seeds", False))
        return out

    return to_values
