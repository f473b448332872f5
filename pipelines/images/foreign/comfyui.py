"""ComfyUI: the `prompt` (API format graph) and `workflow` (editor graph) JSON of its PNG text chunks.

The API format is `{node id: {"class_type": ..., "inputs": {name: value or [source id, output slot]}}}`.
The parameters are read by following links back from the sampler: its `positive`/`negative` inputs to
the text encoders, `model` through LoRA loaders to the checkpoint loader, `latent_image` to the empty
latent (size) or a VAE encode (img2img). A `workflow` alone (images saved with the API graph stripped)
is first turned into that format for the node types read here.
"""
from __future__ import annotations

from typing import Any

from .common import ForeignParameters, file_stem, json_object, kdiff_sampler, lora_prompt_tag, number

# The core samplers, and the "Efficiency Nodes" pack's, which take the same inputs (widely shared images).
SAMPLERS = ("KSampler", "KSamplerAdvanced", "KSampler (Efficient)", "KSampler Adv. (Efficient)")
TEXT_ENCODERS = ("CLIPTextEncode", "CLIPTextEncodeSDXL", "CLIPTextEncodeSDXLRefiner")
CHECKPOINT_LOADERS = ("CheckpointLoaderSimple", "CheckpointLoader", "UNETLoader", "unCLIPCheckpointLoader")
LORA_LOADERS = ("LoraLoader", "LoraLoaderModelOnly")
EMPTY_LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyHunyuanLatentVideo")
# Nodes between the sampler and the checkpoint that only pass the model on: nothing to reproduce.
_MODEL_PASSTHROUGH = ("Reroute",)

# The editor format stores widget values by position: their names, per node type, for those read here
# ("control_after_generate" is the editor-only widget after a seed).
WIDGETS: dict[str, tuple[str, ...]] = {
    "KSampler": ("seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": ("add_noise", "noise_seed", "control_after_generate", "steps", "cfg", "sampler_name",
                         "scheduler", "start_at_step", "end_at_step", "return_with_leftover_noise"),
    "CLIPTextEncode": ("text",),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "VAELoader": ("vae_name",),
    "CLIPSetLastLayer": ("stop_at_clip_layer",),
}


def read(items: dict[str, Any], size: tuple[int, int]) -> ForeignParameters | None:
    graph = json_object(items.get("prompt"))
    if not _is_api_graph(graph):
        graph = workflow_to_api(json_object(items.get("workflow")))
    if not _is_api_graph(graph):
        return None
    return _read_graph(graph, size)


def _is_api_graph(graph: Any) -> bool:
    return isinstance(graph, dict) and any(isinstance(n, dict) and n.get("class_type") in SAMPLERS
                                           for n in graph.values())


def workflow_to_api(workflow: dict | None) -> dict | None:
    """The editor graph as an API graph, for the node types in WIDGETS (others keep only their links)."""
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        return None
    # links: [link id, source node, source slot, target node, target slot, type]
    sources = {link[0]: link for link in workflow.get("links") or [] if isinstance(link, list) and len(link) >= 3}
    graph: dict[str, Any] = {}
    for node in workflow["nodes"]:
        if not isinstance(node, dict) or node.get("mode") in (2, 4):   # 2 muted, 4 bypassed
            continue
        kind = str(node.get("type", ""))
        inputs: dict[str, Any] = {}
        values = node.get("widgets_values")
        if isinstance(values, list):
            inputs.update(zip(WIDGETS.get(kind, ()), values))
        for slot in node.get("inputs") or []:
            link = sources.get(slot.get("link")) if isinstance(slot, dict) else None
            if link is not None:
                inputs[str(slot.get("name"))] = [str(link[1]), link[2]]
        graph[str(node.get("id"))] = {"class_type": kind, "inputs": inputs}
    return graph


def _node(graph: dict, ref: Any) -> dict | None:
    """The node a link `[source id, slot]` points at."""
    if isinstance(ref, list) and ref:
        node = graph.get(str(ref[0]))
        return node if isinstance(node, dict) else None
    return None


def _inputs(node: dict | None) -> dict[str, Any]:
    inputs = node.get("inputs") if node else None
    return inputs if isinstance(inputs, dict) else {}


def _value(graph: dict, value: Any, depth: int = 0) -> Any:
    """An input's value, following a link to a primitive/string node (its first plain value)."""
    if not isinstance(value, list) or depth > 8:
        return value
    for candidate in _inputs(_node(graph, value)).values():
        if not isinstance(candidate, list):
            return candidate
        return _value(graph, candidate, depth + 1)
    return None


def _read_graph(graph: dict, size: tuple[int, int]) -> ForeignParameters:
    out = ForeignParameters("ComfyUI")
    samplers = sorted((k for k, n in graph.items() if isinstance(n, dict) and n.get("class_type") in SAMPLERS),
                      key=lambda k: (not _starts_from_empty_latent(graph, graph[k]), _order(k)))
    sampler = graph[samplers[0]]
    if len(samplers) > 1:
        out.note(f"the workflow has {len(samplers)} sampler nodes: only the first pass (node {samplers[0]}) "
                 f"is reproduced (a refiner or upscale pass is not)")
    _read_sampler(graph, sampler, out)
    out.prompt = _conditioning_text(graph, _inputs(sampler).get("positive"), "positive", out)
    out.negative_prompt = _conditioning_text(graph, _inputs(sampler).get("negative"), "negative", out)
    _read_model(graph, _inputs(sampler).get("model"), out)
    _read_latent(graph, _inputs(sampler).get("latent_image"), size, out)
    for node in graph.values():
        kind = node.get("class_type") if isinstance(node, dict) else None
        if kind == "CLIPSetLastLayer":
            layer = number(_value(graph, _inputs(node).get("stop_at_clip_layer")))
            if layer is not None and layer < -1:
                out.params["Clip skip"] = int(-layer)
        elif kind == "VAEDecode":
            vae = _node(graph, _inputs(node).get("vae"))
            if vae is not None and vae.get("class_type") == "VAELoader":
                out.params["VAE"] = file_stem(_value(graph, _inputs(vae).get("vae_name")))
    return out


def _order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)


def _starts_from_empty_latent(graph: dict, sampler: dict) -> bool:
    latent = _node(graph, _inputs(sampler).get("latent_image"))
    return latent is not None and (latent.get("class_type") in EMPTY_LATENTS or "empty_latent_width" in _inputs(latent))


def _read_sampler(graph: dict, sampler: dict, out: ForeignParameters) -> None:
    inputs = _inputs(sampler)
    advanced = "noise_seed" in inputs
    seed = _value(graph, inputs.get("noise_seed" if advanced else "seed"))
    steps = number(_value(graph, inputs.get("steps")))
    out.params["Steps"] = int(steps) if steps is not None else None
    kdiff_sampler(out, _value(graph, inputs.get("sampler_name")), _value(graph, inputs.get("scheduler")))
    out.params["CFG scale"] = number(_value(graph, inputs.get("cfg")))
    out.params["Seed"] = int(number(seed)) if number(seed) is not None else None
    if advanced:
        start = number(_value(graph, inputs.get("start_at_step")), 0)
        end = number(_value(graph, inputs.get("end_at_step")), 10000)
        if start > 0 or (steps is not None and end < steps):
            out.note(f"the sampler runs only steps {int(start)} to {int(min(end, steps or end))} of {int(steps or 0)} "
                     f"(a base/refiner split): A1111 runs them all")
        if str(_value(graph, inputs.get("add_noise"))).lower() == "disable":
            out.note("the sampler adds no noise (add_noise: disable): A1111 always starts from noise")
    else:
        denoise = number(_value(graph, inputs.get("denoise")), 1.0)
        if denoise < 1.0:
            out.params["Denoising strength"] = denoise
            out.note(f"ComfyUI runs all {int(steps or 0)} steps at denoise {denoise:g}; A1111's img2img runs "
                     f"about denoising strength x steps of them")


def _conditioning_text(graph: dict, ref: Any, side: str, out: ForeignParameters) -> str:
    """The prompt behind a sampler's positive/negative input: text encoders found by following the
    conditioning links (ControlNet apply, combine, set-area...); several are joined with A1111's AND."""
    texts: list[str] = []
    stack, seen = [ref], set()
    while stack:
        node_ref = stack.pop()
        node = _node(graph, node_ref)
        key = str(node_ref[0]) if isinstance(node_ref, list) and node_ref else None
        if node is None or key in seen:
            continue
        seen.add(key)
        inputs = _inputs(node)
        if node.get("class_type") in TEXT_ENCODERS:
            text = _value(graph, inputs.get("text", inputs.get("text_g")))
            if text_l := _value(graph, inputs.get("text_l")):
                if text_l != text:
                    out.note(f"the {side} SDXL prompt has different text_g and text_l: text_g is used")
            if isinstance(text, str):
                texts.append(text)
            continue
        if isinstance(inputs.get(side), str):   # loader nodes that encode their own prompt text
            texts.append(inputs[side])
            continue
        follow = [inputs[side]] if isinstance(inputs.get(side), list) else [
            v for k, v in inputs.items() if k.startswith("conditioning") and isinstance(v, list)]
        if not follow:
            out.note(f"the {side} prompt comes from a {node.get('class_type')} node, which is not read")
        stack.extend(reversed(follow))
    if len(texts) > 1:
        out.note(f"the {side} prompt combines {len(texts)} conditionings: written as A1111's AND")
    return " AND ".join(t.strip() for t in texts)


def _read_model(graph: dict, ref: Any, out: ForeignParameters) -> None:
    tags: list[str] = []
    node, depth = _node(graph, ref), 0
    while node is not None and depth < 64:
        depth += 1
        kind, inputs = node.get("class_type"), _inputs(node)
        if kind in CHECKPOINT_LOADERS or "ckpt_name" in inputs:
            name = _value(graph, inputs.get("ckpt_name", inputs.get("unet_name")))
            out.params["Model"] = file_stem(name) if name else None
            _read_loader_extras(graph, inputs, tags, out)
            break
        if kind in LORA_LOADERS:
            tags.append(lora_prompt_tag(_value(graph, inputs.get("lora_name")),
                                        _value(graph, inputs.get("strength_model")),
                                        _value(graph, inputs.get("strength_clip")) if kind == "LoraLoader" else 0))
        elif kind not in _MODEL_PASSTHROUGH:
            out.note(f"ComfyUI node {kind} changes the model: not reproduced")
        node = _node(graph, inputs.get("model"))
    if tags:
        # A1111 names LoRAs in the prompt; the loaders nearest the checkpoint come first.
        out.prompt = " ".join([out.prompt, *reversed(tags)]).strip()


def _read_loader_extras(graph: dict, inputs: dict, tags: list[str], out: ForeignParameters) -> None:
    """What all-in-one loaders (Efficiency Nodes' "Efficient Loader") set besides the checkpoint."""
    lora = _value(graph, inputs.get("lora_name"))
    if lora and lora != "None":
        tags.append(lora_prompt_tag(lora, _value(graph, inputs.get("lora_model_strength", 1.0)),
                                    _value(graph, inputs.get("lora_clip_strength"))))
    layer = number(_value(graph, inputs.get("clip_skip")))
    if layer is not None and layer < -1:
        out.params["Clip skip"] = int(-layer)
    vae = _value(graph, inputs.get("vae_name"))
    if vae and vae != "Baked VAE":
        out.params["VAE"] = file_stem(vae)


def _read_latent(graph: dict, ref: Any, size: tuple[int, int], out: ForeignParameters) -> None:
    node = _node(graph, ref)
    kind = node.get("class_type") if node else None
    inputs = _inputs(node)
    width = number(_value(graph, inputs.get("width", inputs.get("empty_latent_width"))))
    height = number(_value(graph, inputs.get("height", inputs.get("empty_latent_height"))))
    if (kind in EMPTY_LATENTS or "empty_latent_width" in inputs) and width and height:
        out.params["Size"] = f"{int(width)}x{int(height)}"
        return
    if kind == "VAEEncode" or kind == "VAEEncodeForInpaint":
        out.note("img2img in ComfyUI: the source image is not stored in the file")
    elif kind is not None:
        out.note(f"the latent comes from a {kind} node, which is not reproduced")
    out.params["Size"] = f"{size[0]}x{size[1]}"
