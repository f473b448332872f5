"""X/Y/Z plot: vary up to three parameters and get a labelled grid plus every image.

Written only against the public hook API (`pipelines.hooks`): the axis settings are extension parameters
(a widget group in txt2img/img2img, fields in the API, keys in the grid's infotext), and a
`run_generation` hook takes the job over when an axis is set: one ordinary generation per cell (each
saved like any output, with its infotext), then the grid (saved in `<mode>-grids`).

Any declared parameter can be an axis (built-in or another extension's): steps, CFG scale, sampler,
schedule type, seed, size, checkpoint, VAE, clip skip, denoising strength, ... plus "Prompt S/R"
(the first value is searched in the prompts and replaced by each value in turn).
"""
from __future__ import annotations

import itertools

from pipelines.core.errors import ParameterError
from pipelines.images.grids import font_size_for, labelled_grid, side_by_side
from pipelines.params.infotext import format_value, quote
from pipelines.images.outputs import image_grid
from pipelines.params.declarations import BY_NAME, Param, check_request, resolve_seed

from .a1111_script import ARG_NAMES, make_converter
from .axes import NOTHING, PROMPT_SR, parse_axis

SECTION = "X/Y/Z plot"
PREFIX = "xyz_"
MAX_CELLS = 100
# Not offered as axes: the prompts (use Prompt S/R), lists, and how many images a cell makes.
EXCLUDED = {"prompt", "negative_prompt", "styles", "batch_size", "n_iter"}
MODEL_AXES = ("sd_model_checkpoint", "sd_vae")   # slow to switch: run as the outermost loop


def setup(ext):
    def axis_params() -> dict[str, Param]:
        """Axis name (the parameter's label) → Param, for every declared parameter that can vary."""
        out: dict[str, Param] = {}
        for p in ext.all_params():
            if p.name in EXCLUDED or p.name.startswith(PREFIX) or p.type not in (int, float, str, bool):
                continue
            name = p.label if p.label not in out and p.label not in (NOTHING, PROMPT_SR) else f"{p.label} ({p.name})"
            out.setdefault(name, p)
        return out

    def axis_names() -> list[str]:
        return [NOTHING, PROMPT_SR, *axis_params()]

    for axis in ("x", "y", "z"):
        ext.add_param(Param(f"{PREFIX}{axis}_type", str, NOTHING, f"{axis.upper()} type", f"{axis.upper()} Type",
                            choices=axis_names, widget="dropdown",
                            doc=f"what the {axis.upper()} axis varies: Nothing, Prompt S/R or a parameter's label"),
                      section=SECTION)
        ext.add_param(Param(f"{PREFIX}{axis}_values", str, "", f"{axis.upper()} values", f"{axis.upper()} Values",
                            widget="textbox", max_length=2000,
                            doc="comma separated; ranges: 1-5, 1-10 (+2), 1-10 [5]; Prompt S/R: search text first"),
                      section=SECTION)
    ext.add_param(Param(f"{PREFIX}draw_legend", bool, True, "Draw legend", None, widget="checkbox",
                        doc="write the axis values in the grid's margins"), section=SECTION)
    ext.add_param(Param(f"{PREFIX}keep_random_seeds", bool, False, "Keep -1 for seeds", None, widget="checkbox",
                        doc="a random seed per cell instead of one seed for the whole plot"), section=SECTION)
    ext.add_param(Param(f"{PREFIX}include_images", bool, True, "Include sub images", None, widget="checkbox",
                        doc="return every cell's image after the grid (they are saved either way)"), section=SECTION)

    def axis_name_of(param_name: str) -> str | None:
        return next((name for name, p in axis_params().items() if p.name == param_name), None)

    # A1111 clients (webuiapi & co.) run the plot as script_name="X/Y/Z plot" with positional script_args.
    ext.add_script("X/Y/Z plot", make_converter(axis_name_of), args=ARG_NAMES)

    @ext.before_generation
    def drop_values_of_unused_axes(req):
        """An axis set back to Nothing keeps its values box filled in the UI; those values are not in
        effect, so they must not reach the image's infotext ("X Values" on every later image)."""
        stale = [f"{PREFIX}{a}_values" for a in "xyz"
                 if req.extra.get(f"{PREFIX}{a}_type", NOTHING) == NOTHING and req.extra.get(f"{PREFIX}{a}_values")]
        if not stale:
            return None
        return req.replace(extra={**req.extra, **{name: "" for name in stale}})

    @ext.run_generation
    def plot(call):
        req = call.request
        opts = req.extra
        if all(opts.get(f"{PREFIX}{a}_type", NOTHING) == NOTHING for a in "xyz"):
            return None                         # not a plot: the ordinary generation runs
        params = axis_params()
        keep = bool(opts.get(f"{PREFIX}keep_random_seeds"))
        axes = [parse_axis(opts.get(f"{PREFIX}{a}_type", NOTHING), opts.get(f"{PREFIX}{a}_values", ""), params,
                           f"{PREFIX}{a}_values", prompt=req.prompt, negative=req.negative_prompt, keep_random=keep)
                for a in "xyz"]
        x, y, z = axes
        cells = len(x) * len(y) * len(z)
        if cells > MAX_CELLS:
            raise ParameterError(f"{PREFIX}x_values", f"{len(x)} x {len(y)} x {len(z)} = {cells} images; "
                                                      f"at most {MAX_CELLS} in one plot")

        # One seed for the whole plot (unless kept random), the plot's own settings back to their defaults.
        base = req.replace(extra={k: (_default(ext, k) if k.startswith(PREFIX) else v) for k, v in opts.items()})
        if not keep:
            base = base.replace(seed=resolve_seed(base.seed), subseed=resolve_seed(base.subseed))
        requests = {}
        for ix, iy, iz in itertools.product(range(len(x)), range(len(y)), range(len(z))):
            cell = base
            for axis, i in ((x, ix), (y, iy), (z, iz)):
                cell = _apply(cell, axis, axis.values[i] if axis.active else None)
            check_request(cell)
            requests[ix, iy, iz] = cell

        # z outermost, x innermost, except that a checkpoint/VAE axis goes outermost (fewest model switches)
        loops = sorted(((2, z), (1, y), (0, x)), key=lambda na: 0 if na[1].param is not None
                       and na[1].param.name in MODEL_AXES else 1)
        order = sorted(requests, key=lambda k: tuple(k[n] for n, _ in loops))
        results = {}
        for n, key in enumerate(order):
            if call.interrupted:
                break
            sub = call.generate(requests[key], index=n, total=len(order))
            results[key] = sub
            if sub.interrupted:
                break

        legend = bool(opts.get(f"{PREFIX}draw_legend", True))
        grids = []
        for iz in range(len(z)):
            rows = [[_cell_image(results.get((ix, iy, iz))) for ix in range(len(x))] for iy in range(len(y))]
            grids.append(labelled_grid(rows, col_labels=x.labels if legend and x.active else (),
                                       row_labels=y.labels if legend and y.active else ()))
        sizes = [im.size for r in results.values() for im in r.images[:1]] or [(64, 64)]
        grid = side_by_side(grids, z.labels if legend and z.active else (),
                            font_size=font_size_for(max(w for w, _ in sizes), max(h for _, h in sizes)))
        parts = [results[k] for k in sorted(results, key=lambda k: (k[2], k[1], k[0]))]
        return call.grid_result(grid, parts, infotext=_grid_infotext(parts, opts),
                                cell_images=bool(opts.get(f"{PREFIX}include_images", True)))


def _default(ext, name: str):
    return next(p.default for p in ext.all_params() if p.name == name)


def _apply(req, axis, value):
    if not axis.active:
        return req
    if axis.kind == "sr":
        search = axis.values[0]
        return req.replace(prompt=req.prompt.replace(search, value),
                           negative_prompt=req.negative_prompt.replace(search, value))
    name = axis.param.name
    if name in BY_NAME:
        return req.replace(**{name: value})
    return req.replace(extra={**req.extra, name: value})   # another extension's parameter


def _cell_image(result):
    if result is None or not result.images:
        return None
    return result.images[0] if len(result.images) == 1 else image_grid(result.images)


def _grid_infotext(parts, opts) -> str | None:
    """The first image's infotext plus the axes (A1111's "X Type: ..., X Values: ..."), so pasting the
    grid's parameters sets the plot up again."""
    first = next((p for p in parts if p.infotexts), None)
    if first is None:
        return None
    pairs = []
    for a in "xyz":
        kind = opts.get(f"{PREFIX}{a}_type", NOTHING)
        if kind != NOTHING:
            pairs.append(f"{a.upper()} Type: {quote(kind)}")
            pairs.append(f"{a.upper()} Values: {quote(format_value(opts.get(f'{PREFIX}{a}_values', '')))}")
    return first.infotexts[0] + (", " + ", ".join(pairs) if pairs else "")
