"""Gradio widgets derived from the parameter declarations (`pipelines.params.declarations.PARAMS`).

`make_widget(param)` is the one place that turns a `Param` into a component: a slider for a number
with a range and a step, a number box for one without a step (seeds), a dropdown for choices (a
multi-select one for lists such as styles), radio buttons for values shown by name (`labels`), a
checkbox for a bool, a textbox for a string. Tabs lay widgets out; they never restate a label, a
range or a default.
"""
from __future__ import annotations

from typing import Any

from pipelines.params.declarations import BY_NAME, PARAMS, Param


def widget_kind(param: Param) -> str:
    if param.widget != "auto":
        return param.widget
    if param.type is bool:
        return "checkbox"
    if param.choices is not None:
        return "dropdown"
    if param.type in (int, float):
        if param.minimum is not None and param.maximum is not None and param.step is not None:
            return "slider"
        return "number"
    return "textbox"


def make_widget(param: Param | str, *, elem_prefix: str = "", **overrides: Any):
    """A Gradio component for `param` (a Param or its name); `overrides` go to the constructor."""
    import gradio as gr

    p = BY_NAME[param] if isinstance(param, str) else param
    kind = widget_kind(p)
    kw: dict[str, Any] = dict(label=p.label, value=p.default)
    if elem_prefix:
        kw["elem_id"] = f"{elem_prefix}_{p.name}"
    if kind == "checkbox":
        cls = gr.Checkbox
    elif kind == "dropdown":
        cls = gr.Dropdown
        kw["choices"] = p.choice_list() or []
    elif kind == "multiselect":
        cls = gr.Dropdown
        kw.update(choices=p.choice_list() or [], multiselect=True, value=list(p.default or ()))
    elif kind == "radio":
        cls = gr.Radio
        labels = getattr(p, "labels", None)
        # A named choice per value (A1111 radio buttons): the label shows, the declared value is sent.
        kw["choices"] = [(label, p.type(i)) for i, label in enumerate(labels)] if labels else (p.choice_list() or [])
    elif kind == "multiselect":  # a list of names (styles): choices come from the tab when they are dynamic
        cls = gr.Dropdown
        kw.update(multiselect=True, choices=p.choice_list() or [], value=list(p.default))
    elif kind == "slider":
        cls = gr.Slider
        kw.update(minimum=p.minimum, maximum=p.maximum, step=p.step)
    elif kind == "number":
        cls = gr.Number
        kw["precision"] = 0 if p.type is int else None
        if p.minimum is not None:
            kw["minimum"] = p.minimum
        if p.maximum is not None:
            kw["maximum"] = p.maximum
    else:
        cls = gr.Textbox
        if getattr(p, "max_length", None):
            kw["max_length"] = p.max_length
    kw.update(overrides)
    if kind == "dropdown" and kw.get("value") == "" and "" not in (kw.get("choices") or []):
        kw["value"] = None   # "" means "none chosen" (e.g. the active checkpoint): an empty dropdown
    return cls(**kw)


def params_for(mode: str, *, exclude_groups: tuple[str, ...] = ()) -> list[Param]:
    """The parameters a tab of `mode` shows, in declaration order."""
    return [p for p in PARAMS if mode in p.modes and p.group not in exclude_groups]


def coerce(param: Param | str, value: Any) -> Any:
    """A widget's value in the declared type (Gradio sliders return floats, numbers may be None)."""
    p = BY_NAME[param] if isinstance(param, str) else param
    if value is None:
        return None
    if p.type is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if p.type is tuple and isinstance(value, list):
        return tuple(value)
    return value


def schedule_choices(sampler: str | None) -> list[str] | None:
    """The schedule types `sampler` supports (its dropdown's choices), or None for an unknown sampler."""
    from pipelines.core.errors import UserError
    from pipelines.generate.samplers import schedules_for

    try:
        return schedules_for(sampler or "")
    except UserError:
        return None


def field_updates(field_names, values: dict[str, Any]) -> list:
    """gr.update()s setting every field of `field_names` that `values` holds (the others untouched). The
    schedule type's choices follow the sampler in `values`: a value set without its choices would leave the
    dropdown holding a value it does not offer, which Gradio refuses at the next Generate."""
    import gradio as gr

    updates = []
    for name in field_names:
        if name not in values:
            updates.append(gr.update())
            continue
        v = values[name]
        kw: dict[str, Any] = {"value": list(v) if isinstance(v, tuple) else v}
        if name == "scheduler" and values.get("sampler_name"):
            choices = schedule_choices(values["sampler_name"])
            if choices:
                kw["choices"] = choices
                if v not in choices:
                    kw["value"] = "Automatic"
        updates.append(gr.update(**kw))
    return updates
