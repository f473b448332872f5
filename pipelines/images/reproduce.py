"""What it takes to make an image again from its parameters, and what will differ.

Given an image's infotext (A1111's own, or converted from another tool by `pipelines.images.foreign`),
`plan_reproduction` finds the checkpoint, VAE and LoRAs it names among the user's files, by name or by
hash (A1111's `Model hash`, `VAE hash`, `Lora hashes`), rewrites LoRA tags to the local file names, and
lists every difference from the original: a missing or other version of a model, another VAE, a field
this app does not honour, and the source tool's notes (a sampler with no exact counterpart...).

Lookups go through the objects that own the files (a `ModelRegistry` and a `NetworkManager`), passed in
(this layer does not import them).
Hashes are only computed for LoRAs, and only when one is not found by name: they are small files and the
hashes are cached; checkpoints are matched by the hashes already known (as A1111 does).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..core.errors import UserError
from ..params.declarations import request_values_from_infotext
from ..params.infotext import build_infotext, parse_infotext

__all__ = ["INFO_ONLY_KEYS", "Reproduction", "is_info_only", "plan_reproduction"]

# Infotext keys that describe the image or are handled here (models), not fields to set.
INFO_ONLY_KEYS = ("Model", "Model hash", "VAE", "VAE hash", "Lora hashes", "TI hashes", "Version", "Hashes")


def is_info_only(key: str) -> bool:
    return key in INFO_ONLY_KEYS or key.startswith("ControlNet")


@dataclass
class Reproduction:
    """The local names to use for an image's models, and what will differ from the original."""

    infotext: str                        # the infotext with local names (checkpoint title, LoRA tags)
    source: str | None = None            # the tool that made the image when it was not A1111/Forge
    checkpoint: str | None = None        # title of the local checkpoint the image names
    vae: str | None = None               # local VAE name the image names
    differences: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        made_by = f" (made with {self.source})" if self.source else ""
        if self.exact:
            return f"Reproducible here{made_by}: every model and setting of the image is available."
        lines = [f"Differences from the original{made_by}:"] + [f"- {d}" for d in self.differences]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "exact": self.exact, "checkpoint": self.checkpoint, "vae": self.vae,
                "differences": list(self.differences), "infotext": self.infotext}


def plan_reproduction(infotext: str, registry, networks=None, *, source: str | None = None,
                      notes: Iterable[str] = (), active: tuple[str, str | None] | None = None,
                      extra_params=()) -> Reproduction:
    """Resolve `infotext`'s models against `registry` (checkpoints, VAEs) and `networks` (LoRAs).

    `notes`: what the source tool's reader could not carry; `active`: (title, VAE file name or None for its
    own) of the loaded checkpoint, to say when that is the image's checkpoint but decodes with another VAE;
    `extra_params`: extensions' parameters (they count as supported fields).
    """
    hashes, rest = _civitai_hashes(infotext)
    parsed = parse_infotext(rest)
    params = dict(parsed.params)
    out = Reproduction(infotext, source=source)
    out.differences.extend(notes)
    out.checkpoint = _checkpoint(registry, params, hashes.get("model"), out.differences)
    current_vae = active[1] if active and out.checkpoint and active[0] == out.checkpoint else None
    out.vae = _vae(registry, params, current_vae, out.differences)
    prompt = parsed.prompt
    if networks is not None:
        lora_hashes = _lora_hashes(params.get("Lora hashes", ""))
        lora_hashes.update({k[5:].lower(): v for k, v in hashes.items() if k.startswith("lora:")
                            and k[5:].lower() not in lora_hashes})
        prompt = _loras(networks, prompt, lora_hashes, out.differences)
    _, unknown = request_values_from_infotext(params, extra_params)
    unsupported = [f"{k}: {v}" for k, v in unknown.items() if not is_info_only(k)]
    if unsupported:
        out.differences.append("not supported here, left out: " + ", ".join(unsupported))
    if out.checkpoint:
        params["Model"] = out.checkpoint
    if out.vae:
        params["VAE"] = out.vae
    plain = {k: v for k, v in params.items() if not (k.endswith(("-1", "-2")) and k[:-2] in params)}
    if prompt != parsed.prompt or out.checkpoint or out.vae:
        out.infotext = build_infotext(prompt, parsed.negative_prompt, plain)
    return out


def _find(lookup, query: str | None):
    if not query:
        return None
    try:
        return lookup(query)
    except UserError:
        return None


# A1111 writes a dict parameter as bare JSON (its quote() json.dumps the dict), which the parameter
# regex cuts at the first comma: the object is taken from the text itself.
_HASHES = re.compile(r'(?:^|, )Hashes: ("?)(\{[^{}]*\})\1')


def _civitai_hashes(infotext: str) -> tuple[dict[str, str], str]:
    """`Hashes: {"model": ..., "lora:name": ...}` (the JSON Civitai's A1111 extension and many ComfyUI save
    nodes write) and the infotext without it (its pieces would read as bogus parameters)."""
    head, _, last = infotext.strip().rpartition("\n")
    match = _HASHES.search(last)
    if match is None:
        return {}, infotext
    rest = f"{head}\n{last[:match.start()]}{last[match.end():]}".strip()
    try:
        raw = match.group(2)
        value = json.loads(json.loads(f'"{raw}"') if match.group(1) else raw)
    except ValueError:
        return {}, infotext
    return ({str(k): str(v).lower() for k, v in value.items()} if isinstance(value, dict) else {}), rest


def _checkpoint(registry, params: dict[str, str], fallback_hash: str | None,
                differences: list[str]) -> str | None:
    name, short = params.get("Model"), (params.get("Model hash") or fallback_hash or "").lower()
    by_hash = _find(registry.find_checkpoint, short) if len(short) >= 8 else None
    found = by_hash or _find(registry.find_checkpoint, name)
    if found is None:
        if name or short:
            label = " ".join(x for x in (name, f"[{short}]" if short else "") if x)
            unhashed = sum(1 for m in registry.checkpoints if m.kind != "diffusers" and not m.sha256)
            maybe = (f" ({unhashed} of yours have no hash yet: a checkpoint's hash is recorded when it is "
                     f"loaded)" if short and unhashed else "")
            differences.append(f"checkpoint {label} is not among your models{maybe}: the current one is used")
        return None
    if by_hash is None and short and found.sha256 and not found.sha256.startswith(short):
        differences.append(f"your checkpoint {found.title} is another version than the image's "
                           f"({name} [{short}])")
    return found.title


def _vae(registry, params: dict[str, str], current: str | None, differences: list[str]) -> str | None:
    name, short = params.get("VAE"), (params.get("VAE hash") or "").lower()
    if not name and not short:
        if current and current not in ("Automatic", "None"):
            differences.append(f"the image used its checkpoint's own VAE; yours is set to {current}")
        return None
    found = (_find(registry.find_vae, short) if len(short) >= 8 else None) or _find(registry.find_vae, name)
    if found is None:
        differences.append(f"VAE {name or short} is not among your VAEs: another VAE decodes the image")
        return None
    return found.name


def _lora_hashes(text: str) -> dict[str, str]:
    out = {}
    for part in (text or "").split(","):
        name, _, digest = part.rpartition(":")
        if name.strip() and digest.strip():
            out[name.strip().lower()] = digest.strip().lower()
    return out


def _hash_matches(networks, nf, digest: str) -> bool | None:
    """Whether LoRA file `nf` has hash `digest` (None: hashing is off); A1111 writes the addnet hash,
    Fooocus the file's sha256, both shortened."""
    known = False
    for addnet in (True, False):
        local = networks.file_hash(nf, addnet=addnet)
        if local:
            known = True
            if local.startswith(digest) or digest.startswith(local):
                return True
    return False if known else None


def _lora_by_hash(networks, digest: str):
    return next((nf for nf in networks.lora_files() if _hash_matches(networks, nf, digest)), None)


def _loras(networks, prompt: str, hashes: dict[str, str], differences: list[str]) -> str:
    """The prompt with each LoRA tag naming a local file: found by name, else by its hash."""
    for tag in networks.lora_tags(prompt):
        digest = hashes.get(tag.name.lower(), "")
        found = networks.find_lora(tag.name)
        if found is None and digest:
            found = _lora_by_hash(networks, digest)
            if found is not None:
                prompt = prompt.replace(tag.text, tag.text.replace(tag.name, found.alias, 1), 1)
        if found is None:
            label = f"{tag.name} [{digest}]" if digest else tag.name
            differences.append(f"LoRA {label} is not among your LoRAs: it is left out")
            continue
        if digest and _hash_matches(networks, found, digest) is False:
            differences.append(f"your LoRA {found.alias} is another version than the image's ({digest})")
    return prompt
