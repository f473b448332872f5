"""ControlNet units on the txt2img and img2img tabs (`pipelines.controlnet`: units, job, preprocessors).

Up to `--controlnet-units` units, each an accordion: enable, pixel perfect, control image (on img2img an
empty image reuses the img2img input), preprocessor with its own sliders (declared once in
`pipelines.controlnet.preprocessors`: a preprocessor without a threshold hides that slider), model (only those
matching the active checkpoint's architecture, with a note saying why others are hidden), weight,
guidance start/end, control mode, resize mode, and a preview of the preprocessor output (run on the
job queue, like a generation, since weighted preprocessors use the device).

Defaults come from `ControlNetUnit`'s fields; the enabled units are handed to the engine as
`ControlNetUnit`s, checked (`ControlNetUnit.checked`) before the job is queued so a bad value is
reported at once.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import gradio as gr

from .common import errors_to_ui, user_error

if TYPE_CHECKING:
    from .context import GenerationTabView

log = logging.getLogger(__name__)

FIELDS = ("enabled", "image", "module", "model", "weight", "resize_mode", "processor_res", "threshold_a",
          "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode")
SLIDERS = ("processor_res", "threshold_a", "threshold_b")
WEIGHT_RANGE = (0.0, 2.0)       # ControlNetUnit.checked accepts 0..2 (sd-webui-controlnet's slider)


def controlnet_available(services) -> bool:
    """The manager knows ControlNet models and the engine takes units."""
    if getattr(services.manager, "controlnets", None) is None:
        return False
    try:
        import inspect

        return "controlnet" in inspect.signature(services.engine.txt2img).parameters
    except (TypeError, ValueError):
        return False


def unit_defaults() -> dict[str, Any]:
    from pipelines.controlnet.units import ControlNetUnit

    return {f.name: f.default for f in dataclasses.fields(ControlNetUnit) if f.default is not dataclasses.MISSING}


def slider_updates(module: str | None) -> list:
    """gr.update()s for the (processor_res, threshold_a, threshold_b) sliders of preprocessor `module`:
    its labels, ranges and defaults, hidden where it has no such slider."""
    from pipelines.controlnet.preprocessors import get_preprocessor

    try:
        pre = get_preprocessor(module)
    except Exception:  # noqa: BLE001 - an unknown name shows no sliders; generation reports it
        return [gr.update(visible=False) for _ in SLIDERS]
    out = []
    for spec in (pre.resolution, pre.threshold_a, pre.threshold_b):
        if spec is None:
            out.append(gr.update(visible=False))
        else:
            out.append(gr.update(visible=True, label=spec.label, minimum=spec.minimum, maximum=spec.maximum,
                                 step=spec.step, value=spec.default))
    return out


class ControlNetPanel:
    def __init__(self, tab: "GenerationTabView", count: int):
        self.tab = tab
        self.ctx = tab.ctx
        self.services = tab.services
        self.count = max(0, int(count))
        self.units: list[dict[str, Any]] = []          # per unit: field → component (+ preview, buttons)

    # ------------------------------------------------------------------ lists
    def model_choices(self) -> tuple[list[str], str]:
        from pipelines.controlnet.job import choices

        try:
            titles, note = choices(self.services.manager)
        except Exception as err:  # noqa: BLE001 - an unreadable folder is a note, not a broken page
            log.exception("could not list ControlNet models")
            return ["None"], f"ControlNet models could not be listed: {err}"
        return titles, note or ""

    # ------------------------------------------------------------------ layout
    def build(self) -> None:
        from pipelines.controlnet.units import CONTROL_MODES
        from pipelines.controlnet.preprocessors import RESIZE_MODES, get_preprocessor, preprocessor_names

        m = self.tab.MODE
        d = unit_defaults()
        titles, note = self.model_choices()
        pre = get_preprocessor(d["module"])
        reuse = m == "img2img"
        with gr.Accordion("ControlNet", open=False, elem_id=f"{m}_controlnet"):
            for i in range(self.count):
                p = f"{m}_cn{i}"
                u: dict[str, Any] = {}
                with gr.Accordion(f"ControlNet Unit {i}", open=i == 0, elem_id=f"{p}_accordion") as acc:
                    u["accordion"] = acc
                    with gr.Row():
                        u["enabled"] = gr.Checkbox(label="Enable", value=False, elem_id=f"{p}_enabled")
                        u["pixel_perfect"] = gr.Checkbox(label="Pixel Perfect", value=d["pixel_perfect"],
                                                         elem_id=f"{p}_pixel_perfect")
                    with gr.Row(equal_height=False):
                        u["image"] = gr.Image(label="Control image" + (" (empty: the img2img input)" if reuse else ""),
                                              type="pil", sources=["upload", "clipboard"], height=220,
                                              elem_id=f"{p}_image", image_mode="RGB")
                        u["preview"] = gr.Image(label="Preprocessor preview", type="pil", interactive=False,
                                                height=220, elem_id=f"{p}_preview", format="png")
                    with gr.Row():
                        u["module"] = gr.Dropdown(label="Preprocessor", choices=preprocessor_names(),
                                                  value=pre.name, elem_id=f"{p}_module", scale=3)
                        u["preview_button"] = gr.Button("Preview", elem_id=f"{p}_preview_button", scale=0,
                                                        min_width=80, elem_classes="align-end")
                    with gr.Row():
                        u["model"] = gr.Dropdown(label="Model", choices=titles, value="None", elem_id=f"{p}_model",
                                                 scale=3, allow_custom_value=False)
                        u["refresh"] = gr.Button("⟳", elem_id=f"{p}_refresh", scale=0, min_width=42,
                                                 elem_classes="tool")
                    u["note"] = gr.Markdown(note, elem_id=f"{p}_note", elem_classes="cn-note")
                    specs = (pre.resolution, pre.threshold_a, pre.threshold_b)
                    with gr.Row():
                        for name, spec in zip(SLIDERS, specs):
                            u[name] = gr.Slider(label=spec.label if spec else name, value=spec.default if spec else -1,
                                                minimum=spec.minimum if spec else -1,
                                                maximum=spec.maximum if spec else 1,
                                                step=spec.step if spec else 1, visible=spec is not None,
                                                elem_id=f"{p}_{name}")
                    u["weight"] = gr.Slider(label="Control Weight", minimum=WEIGHT_RANGE[0], maximum=WEIGHT_RANGE[1],
                                            step=0.05, value=d["weight"], elem_id=f"{p}_weight")
                    with gr.Row():
                        u["guidance_start"] = gr.Slider(label="Starting Control Step", minimum=0.0, maximum=1.0,
                                                        step=0.01, value=d["guidance_start"],
                                                        elem_id=f"{p}_guidance_start")
                        u["guidance_end"] = gr.Slider(label="Ending Control Step", minimum=0.0, maximum=1.0,
                                                      step=0.01, value=d["guidance_end"], elem_id=f"{p}_guidance_end")
                    u["control_mode"] = gr.Radio(label="Control Mode", choices=list(CONTROL_MODES),
                                                 value=d["control_mode"], elem_id=f"{p}_control_mode")
                    u["resize_mode"] = gr.Radio(label="Resize Mode", choices=list(RESIZE_MODES),
                                                value=d["resize_mode"], elem_id=f"{p}_resize_mode")
                self.units.append(u)

    def inputs(self) -> dict[str, Any]:
        """`run` keyword → component for every unit field (cn0_enabled, cn0_image, ...)."""
        return {f"cn{i}_{name}": u[name] for i, u in enumerate(self.units) for name in FIELDS}

    # ------------------------------------------------------------------ events
    def wire(self) -> None:
        quiet = dict(show_progress="hidden", api_visibility="private")
        f = self.tab.fields
        for i, u in enumerate(self.units):
            sliders = [u[n] for n in SLIDERS]
            u["module"].input(slider_updates, inputs=u["module"], outputs=sliders, queue=False, **quiet)
            lists = [u["model"], u["note"]]
            u["refresh"].click(self.refreshed, inputs=u["model"], outputs=lists, queue=False, **quiet)
            u["accordion"].expand(self.refreshed, inputs=u["model"], outputs=lists, queue=False, **quiet)
            self.ctx.model_listeners.append((self.refreshed, u["model"], lists))
            extra = self.tab.init_image_inputs() if hasattr(self.tab, "init_image_inputs") else {}
            unit_inputs = {name: u[name] for name in FIELDS}
            self._wire_preview(u, unit_inputs, extra, f)
            # Choosing a model or an image means the unit is wanted: enable it (A1111's extension does too).
            u["image"].upload(lambda: True, outputs=u["enabled"], queue=False, **quiet)

    def _wire_preview(self, u, unit_inputs, extra, f) -> None:
        def preview(width, height, **values):
            init = self.tab.init_image_for_preview(values) if extra else None
            return self.preview({k[5:]: v for k, v in values.items() if k.startswith("unit_")}, width, height, init)

        kw = {f"unit_{k}": v for k, v in unit_inputs.items()}
        kw.update(extra)
        u["preview_button"].click(preview, inputs=[f["width"], f["height"]], inputs_kwargs=kw, outputs=u["preview"],
                                  show_progress="minimal", api_visibility="private", concurrency_limit=8,
                                  concurrency_id="generate")

    def refreshed(self, current: str | None):
        self.services.manager.controlnets.registry.refresh()
        titles, note = self.model_choices()
        return gr.update(choices=titles, value=current if current in titles else "None"), note

    def preview(self, values: dict[str, Any], width, height, init_image=None):
        """The preprocessor's output for one unit at the generation size, computed on the job queue."""
        from pipelines.controlnet.job import preview_unit

        with errors_to_ui():
            unit = self.make_unit(values, enabled=True)
            if unit.image is None and init_image is None:
                raise gr.Error("Upload a control image first" + (" (or an img2img input image)"
                                                                 if self.tab.MODE == "img2img" else ""))
            w, h = int(width or 512), int(height or 512)
            job = self.services.submit(lambda: preview_unit(self.services.manager, unit, w, h, init_image=init_image),
                                       label="ControlNet preview")
        job.done.wait()
        if job.error is not None:
            raise user_error(job.error)
        return job.result

    # ------------------------------------------------------------------ paste (infotext → units)
    PASTED = ("enabled", "module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
              "guidance_start", "guidance_end", "pixel_perfect", "control_mode")

    def paste_components(self) -> list:
        return [u[name] for u in self.units for name in self.PASTED]

    def paste_updates(self, params: dict[str, str]) -> list:
        """Updates for `paste_components()` from parsed infotext: each "ControlNet N" entry (sd-webui-controlnet's
        format) fills unit N and enables it; without any entry the units are left as they are. A model that is
        not among yours (or not for this checkpoint) is named in a warning and left at None."""
        from pipelines.controlnet.infotext import units_from_infotext

        keep = [gr.update() for _ in self.units for _name in self.PASTED]
        units = units_from_infotext(params) if any(k.startswith("ControlNet") for k in params) else []
        if not units:
            return keep
        titles, _ = self.model_choices()
        out: list = []
        for i in range(self.count):
            if i >= len(units):
                out += [gr.update(value=False)] + [gr.update() for _ in self.PASTED[1:]]
                continue
            unit = units[i]
            model = self._known_model(unit.model, titles) if unit.enabled else "None"
            if unit.enabled and unit.has_model and model == "None":
                gr.Warning(f"ControlNet {i}: model {unit.model!r} from the image is not among your ControlNets for "
                           f"this checkpoint; choose one in unit {i}")
            sliders = dict(zip(SLIDERS, slider_updates(unit.module)))
            for name in self.PASTED:
                if name == "model":
                    out.append(gr.update(value=model))
                elif name in SLIDERS:
                    upd = dict(sliders[name])
                    if upd.get("visible"):
                        upd["value"] = getattr(unit, name)
                    out.append(upd)
                else:
                    out.append(gr.update(value=getattr(unit, name)))
        if len(units) > self.count:
            gr.Warning(f"the image used {len(units)} ControlNet units; this page shows {self.count} "
                       f"(--controlnet-units)")
        return out

    def _known_model(self, model: str, titles: list[str]) -> str:
        if not model or model.strip().lower() == "none":
            return "None"
        try:
            cf = self.services.manager.controlnets.registry.find(model)
        except Exception:  # noqa: BLE001 - not found: the caller warns
            return "None"
        return cf.title if cf.title in titles else "None"

    # ------------------------------------------------------------------ units
    @staticmethod
    def make_unit(values: dict[str, Any], *, enabled: bool | None = None):
        from pipelines.controlnet.units import ControlNetUnit
        from pipelines.controlnet.preprocessors import get_preprocessor

        kw = {name: values.get(name) for name in FIELDS if values.get(name) is not None}
        if enabled is not None:
            kw["enabled"] = enabled
        try:
            pre = get_preprocessor(kw.get("module"))
            # Sliders the preprocessor does not have are hidden: their values mean "the default".
            for name, spec in zip(SLIDERS, (pre.resolution, pre.threshold_a, pre.threshold_b)):
                if spec is None:
                    kw[name] = -1
        except Exception:  # noqa: BLE001 - `checked` names the bad module
            pass
        return ControlNetUnit(**kw)

    def units_from(self, values: dict[str, Any]) -> list:
        """Every unit (disabled ones too, so infotext keeps sd-webui-controlnet's unit numbers), checked;
        [] when none is enabled."""
        units = []
        for i in range(self.count):
            raw = {name: values.get(f"cn{i}_{name}") for name in FIELDS}
            unit = self.make_unit(raw, enabled=bool(raw["enabled"]))   # not given = off (the dataclass says on)
            units.append(unit.checked(i) if unit.enabled else unit)
        return units if any(u.enabled for u in units) else []
