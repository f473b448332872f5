"""Prompt matrix (AUTOMATIC1111's script): `a busy city|at night|in the rain` makes one image per
combination of the parts after the first (2^(parts - 1) images), in a grid whose margins show which
parts each row and column uses (grey = left out).

Written only against the public hook API: switches are extension parameters (a widget group in
txt2img/img2img, fields in the API), and a `run_generation` hook takes the job over when it is on.
"""
from __future__ import annotations

from pipelines.core.errors import ParameterError
from pipelines.images.grids import Label, labelled_grid
from pipelines.params.declarations import Param, resolve_seed

SECTION = "Prompt matrix"
MAX_PARTS = 6            # variable parts: 2^6 = 64 images


def setup(ext):
    ext.add_param(Param("prompt_matrix", bool, False, "Prompt matrix", "Prompt matrix", widget="checkbox",
                        doc="combine the |-separated parts of the prompt after the first into a grid"),
                  section=SECTION)
    ext.add_param(Param("prompt_matrix_position", str, "end", "Put variable parts at", "Prompt matrix position",
                        choices=("start", "end"), widget="radio"), section=SECTION)
    ext.add_param(Param("prompt_matrix_prompt", str, "positive", "Select prompt", "Prompt matrix prompt",
                        choices=("positive", "negative"), widget="radio"), section=SECTION)
    ext.add_param(Param("prompt_matrix_delimiter", str, "comma", "Select joining char", "Prompt matrix delimiter",
                        choices=("comma", "space"), widget="radio"), section=SECTION)
    ext.add_param(Param("prompt_matrix_different_seeds", bool, False, "Use different seed for each picture",
                        "Prompt matrix different seeds", widget="checkbox"), section=SECTION)

    @ext.run_generation
    def matrix(call):
        req = call.request
        opts = req.extra
        if not opts.get("prompt_matrix"):
            return None
        negative = opts.get("prompt_matrix_prompt") == "negative"
        parts = (req.negative_prompt if negative else req.prompt).split("|")
        variable = [p.strip().strip(",").strip() for p in parts[1:]]
        if not variable:
            raise ParameterError("prompt", "prompt matrix: separate the parts to combine with | "
                                           "(e.g. 'a house|at night|in winter')")
        if len(variable) > MAX_PARTS:
            raise ParameterError("prompt", f"prompt matrix: {len(variable)} variable parts would make "
                                           f"{2 ** len(variable)} images; at most {MAX_PARTS} parts")
        joiner = ", " if opts.get("prompt_matrix_delimiter", "comma") == "comma" else " "
        at_start = opts.get("prompt_matrix_position") == "start"
        base = req.replace(extra={**opts, "prompt_matrix": False}, n_iter=1, batch_size=1,
                           seed=resolve_seed(req.seed), subseed=resolve_seed(req.subseed))
        different = bool(opts.get("prompt_matrix_different_seeds"))
        count = 2 ** len(variable)
        results = []
        for combo in range(count):
            if call.interrupted:
                break
            chosen = [text for n, text in enumerate(variable) if combo & (1 << n)]
            prompt = joiner.join(chosen + [parts[0].strip()] if at_start else [parts[0].strip()] + chosen)
            cell = base.replace(**{"negative_prompt" if negative else "prompt": prompt},
                                seed=base.seed + (combo if different else 0))
            sub = call.generate(cell, index=combo, total=count)
            results.append(sub)
            if sub.interrupted:
                break

        # A1111's layout: the first half of the parts along the top, the rest down the side.
        horizontal = variable[:(len(variable) + 1) // 2]
        vertical = variable[len(horizontal):]
        cols, rows = 2 ** len(horizontal), 2 ** len(vertical)
        images = [r.images[0] if r.images else None for r in results] + [None] * (count - len(results))
        cells = [[images[row * cols + col] for col in range(cols)] for row in range(rows)]

        def labels(texts):
            return [[Label(t, bool(pos & (1 << i))) for i, t in enumerate(texts)] for pos in range(2 ** len(texts))]

        grid = labelled_grid(cells, col_labels=labels(horizontal), row_labels=labels(vertical) if vertical else ())
        return call.grid_result(grid, results)
