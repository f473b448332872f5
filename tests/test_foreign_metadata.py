"""Reading other tools' images: fixture files written here the way ComfyUI, InvokeAI, NovelAI and Fooocus
write them (their public formats: ComfyUI's API-format `prompt` and editor `workflow` JSON, InvokeAI's
CoreMetadata `invokeai_metadata` and 2.x `sd-metadata`, NovelAI's `Comment` keys, Fooocus's metadata
scheme), read back through `read_infotext` and the same parsing "Send to" and the API use. The asserts are
what a user checks: prompt, negative prompt, seed, steps, CFG, sampler, size, model name."""
from __future__ import annotations

import json

import pytest
from PIL import Image, PngImagePlugin

from pipelines.images.metadata import read_image_parameters, read_infotext
from pipelines.params.declarations import request_values_from_infotext
from pipelines.params.infotext import parse_infotext


def _png(path, size=(64, 48), **chunks) -> str:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    Image.new("RGB", size, (40, 90, 140)).save(path, pnginfo=info)
    return str(path)


def _fields(path):
    text, _ = read_infotext(path)
    assert text, "no parameters read"
    parsed = parse_infotext(text)
    return parsed.prompt, parsed.negative_prompt, parsed.params


# ComfyUI's default text-to-image graph in API format (what "Save (API Format)" exports and SaveImage
# embeds as the `prompt` chunk): node id -> {"class_type", "inputs"}; a link is [source node id, output slot].
def comfy_default_prompt(**sampler_changes) -> dict:
    graph = {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 8566257, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {
            "text": "masterpiece best quality girl", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "bad hands", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    graph["3"]["inputs"].update(sampler_changes)
    return graph


def test_comfyui_api_prompt(tmp_path):
    prompt, negative, params = _fields(_png(tmp_path / "c.png", prompt=comfy_default_prompt()))
    assert prompt == "masterpiece best quality girl"
    assert negative == "bad hands"
    assert params["Seed"] == "8566257" and params["Steps"] == "20" and params["CFG scale"] == "8"
    # ComfyUI's "normal" schedule is k-diffusion's own sigmas: A1111's "Automatic"
    assert params["Sampler"] == "Euler" and params["Schedule type"] == "Automatic"
    assert params["Size"] == "512x768"
    assert params["Model"] == "v1-5-pruned-emaonly"


def test_comfyui_loras_vae_clip_skip_and_karras(tmp_path):
    graph = comfy_default_prompt(sampler_name="dpmpp_2m", scheduler="karras", model=["11", 0])
    graph["4"]["inputs"]["ckpt_name"] = "SD15\\dreamshaper_8.safetensors"      # a Windows subfolder
    graph["10"] = {"class_type": "LoraLoader", "inputs": {
        "lora_name": "add_detail.safetensors", "strength_model": 0.6, "strength_clip": 0.6,
        "model": ["4", 0], "clip": ["4", 1]}}
    graph["11"] = {"class_type": "LoraLoader", "inputs": {
        "lora_name": "styles/ink.safetensors", "strength_model": 0.8, "strength_clip": 1,
        "model": ["10", 0], "clip": ["10", 1]}}
    graph["12"] = {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["11", 1]}}
    graph["13"] = {"class_type": "VAELoader", "inputs": {"vae_name": "vae-ft-mse-840000-ema-pruned.safetensors"}}
    graph["8"]["inputs"]["vae"] = ["13", 0]
    prompt, _, params = _fields(_png(tmp_path / "c.png", prompt=graph))
    assert prompt == "masterpiece best quality girl <lora:add_detail:0.6> <lora:ink:1:0.8>"
    assert params["Sampler"] == "DPM++ 2M" and params["Schedule type"] == "Karras"
    assert params["Model"] == "dreamshaper_8"
    assert params["VAE"] == "vae-ft-mse-840000-ema-pruned"
    assert params["Clip skip"] == "2"


def test_comfyui_editor_workflow_only(tmp_path):
    # The editor format ("workflow" chunk): nodes with positional widget values, links as
    # [id, source node, source slot, target node, target slot, type].
    workflow = {
        "last_node_id": 9, "last_link_id": 9, "version": 0.4,
        "nodes": [
            {"id": 3, "type": "KSampler", "mode": 0,
             "inputs": [{"name": "model", "type": "MODEL", "link": 1}, {"name": "positive", "type": "CONDITIONING", "link": 4},
                        {"name": "negative", "type": "CONDITIONING", "link": 6},
                        {"name": "latent_image", "type": "LATENT", "link": 2}],
             "widgets_values": [156680208700286, "randomize", 25, 6.5, "dpmpp_2m_sde", "karras", 1]},
            {"id": 4, "type": "CheckpointLoaderSimple", "mode": 0, "inputs": [],
             "widgets_values": ["sd_xl_base_1.0.safetensors"]},
            {"id": 5, "type": "EmptyLatentImage", "mode": 0, "inputs": [], "widgets_values": [1024, 1024, 1]},
            {"id": 6, "type": "CLIPTextEncode", "mode": 0, "inputs": [{"name": "clip", "type": "CLIP", "link": 3}],
             "widgets_values": ["a lighthouse at dusk, oil painting"]},
            {"id": 7, "type": "CLIPTextEncode", "mode": 0, "inputs": [{"name": "clip", "type": "CLIP", "link": 5}],
             "widgets_values": ["blurry, text"]},
        ],
        "links": [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"],
                  [4, 6, 0, 3, 1, "CONDITIONING"], [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"]],
    }
    prompt, negative, params = _fields(_png(tmp_path / "w.png", workflow=workflow))
    assert (prompt, negative) == ("a lighthouse at dusk, oil painting", "blurry, text")
    assert params["Seed"] == "156680208700286" and params["Steps"] == "25" and params["CFG scale"] == "6.5"
    assert params["Sampler"] == "DPM++ 2M SDE" and params["Schedule type"] == "Karras"
    assert params["Size"] == "1024x1024" and params["Model"] == "sd_xl_base_1.0"


def test_comfyui_base_and_refiner_reads_the_first_pass_and_says_so(tmp_path):
    graph = comfy_default_prompt()
    del graph["3"]
    graph["10"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": 42, "steps": 25, "cfg": 7.5, "sampler_name": "euler_ancestral",
        "scheduler": "normal", "start_at_step": 0, "end_at_step": 20, "return_with_leftover_noise": "enable",
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
    graph["11"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "disable", "noise_seed": 0, "steps": 25, "cfg": 7.5, "sampler_name": "euler",
        "scheduler": "normal", "start_at_step": 20, "end_at_step": 10000, "return_with_leftover_noise": "disable",
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["10", 0]}}
    graph["8"]["inputs"]["samples"] = ["11", 0]
    found = read_image_parameters(_png(tmp_path / "r.png", prompt=graph))
    params = parse_infotext(found.infotext).params
    assert found.source == "ComfyUI"
    assert params["Seed"] == "42" and params["Sampler"] == "Euler a" and params["Steps"] == "25"
    assert any("2 sampler nodes" in n for n in found.notes)
    assert any("steps 0 to 20" in n for n in found.notes)
    assert any("ancestral noise" in n for n in found.notes)


def test_invokeai_core_metadata_v3(tmp_path):
    # InvokeAI 3.x CoreMetadata as stored in the `invokeai_metadata` chunk.
    meta = {"app_version": "3.3.0post3", "generation_mode": "txt2img", "positive_prompt": "landscape, mountains",
            "negative_prompt": "low quality", "width": 768, "height": 432, "seed": 356120443,
            "rand_device": "cpu", "cfg_scale": 7.5, "steps": 50, "scheduler": "dpmpp_2m_sde_k", "clip_skip": 0,
            "model": {"model_name": "amixx_3Prunedfp16", "base_model": "sd-1", "model_type": "main"},
            "controlnets": [], "ipAdapters": [], "t2iAdapters": [],
            "loras": [{"lora": {"model_name": "detail_tweaker", "base_model": "sd-1"}, "weight": 0.75}],
            "vae": {"model_name": "sd-vae-ft-mse", "base_model": "sd-1"}}
    prompt, negative, params = _fields(_png(tmp_path / "i.png", invokeai_metadata=meta))
    assert prompt == "landscape, mountains <lora:detail_tweaker:0.75>"
    assert negative == "low quality"
    assert params["Seed"] == "356120443" and params["Steps"] == "50" and params["CFG scale"] == "7.5"
    assert params["Sampler"] == "DPM++ 2M SDE" and params["Schedule type"] == "Karras"
    assert params["Size"] == "768x432" and params["Model"] == "amixx_3Prunedfp16"
    assert params["VAE"] == "sd-vae-ft-mse"


def test_invokeai_v4_model_identifiers_and_clip_skip(tmp_path):
    # 4.x and later identify models by key/hash/name/base/type.
    meta = {"generation_mode": "sdxl_txt2img", "positive_prompt": "a red fox", "negative_prompt": "",
            "width": 1024, "height": 1024, "seed": 7, "cfg_scale": 5, "steps": 30, "scheduler": "euler_a",
            "clip_skip": 1, "model": {"key": "6b3f", "hash": "sha256:31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
                                      "name": "sd_xl_base_1.0", "base": "sdxl", "type": "main"},
            "loras": [{"model": {"key": "a1", "hash": "blake3:00", "name": "pixel-art-xl", "base": "sdxl",
                                 "type": "lora"}, "weight": 1}]}
    prompt, _, params = _fields(_png(tmp_path / "i4.png", invokeai_metadata=meta))
    assert prompt == "a red fox <lora:pixel-art-xl:1>"
    assert params["Sampler"] == "Euler a" and params["Seed"] == "7" and params["Size"] == "1024x1024"
    assert params["Model"] == "sd_xl_base_1.0" and params["Model hash"] == "31e35c80fc"
    assert params["Clip skip"] == "2"


def test_invokeai_2_sd_metadata(tmp_path):
    # InvokeAI 2.x: `sd-metadata`, negative prompt in [brackets] inside the prompt.
    meta = {"model": "stable diffusion", "model_weights": "stable-diffusion-1.5", "app_id": "invoke-ai/InvokeAI",
            "app_version": "2.2.5", "image": {
                "prompt": [{"prompt": "a castle on a hill [fog, blurry]", "weight": 1.0}], "steps": 40,
                "cfg_scale": 7.5, "threshold": 0, "perlin": 0, "height": 512, "width": 640, "seed": 1234,
                "seamless": False, "hires_fix": False, "type": "txt2img", "postprocessing": None,
                "sampler": "k_lms", "variations": []}}
    prompt, negative, params = _fields(_png(tmp_path / "i2.png", **{"sd-metadata": meta}))
    assert (prompt, negative) == ("a castle on a hill", "fog, blurry")
    assert params["Sampler"] == "LMS" and params["Steps"] == "40" and params["Seed"] == "1234"
    assert params["Size"] == "640x512" and params["Model"] == "stable-diffusion-1.5"


def test_novelai_comment(tmp_path):
    comment = {"prompt": "1girl, red hair", "steps": 28, "height": 1216, "width": 832, "scale": 5.0,
               "uncond_scale": 1.0, "cfg_rescale": 0.0, "seed": 3840394839, "n_samples": 1,
               "noise_schedule": "karras", "sampler": "k_dpmpp_2m", "sm": False, "sm_dyn": False,
               "uc": "lowres, bad anatomy", "request_type": "PromptGenerateRequest"}
    path = _png(tmp_path / "n.png", Title="AI generated image", Description="1girl, red hair",
                Software="NovelAI", Source="Stable Diffusion XL C1E1DE52", Comment=comment)
    found = read_image_parameters(path)
    parsed = parse_infotext(found.infotext)
    assert found.source == "NovelAI"
    assert (parsed.prompt, parsed.negative_prompt) == ("1girl, red hair", "lowres, bad anatomy")
    p = parsed.params
    assert p["Steps"] == "28" and p["CFG scale"] == "5" and p["Seed"] == "3840394839"
    assert p["Sampler"] == "DPM++ 2M" and p["Schedule type"] == "Karras" and p["Size"] == "832x1216"
    assert p["Model"] == "Stable Diffusion XL C1E1DE52"


FOOOCUS_META = {
    "adm_guidance": "(1.5, 0.8, 0.3)", "base_model": "juggernautXL_v8Rundiffusion",
    "base_model_hash": "aeb7e9e689", "clip_skip": 2, "full_negative_prompt": ["unrealistic", "blurry"],
    "full_prompt": ["a cat in a garden", "highly detailed"], "guidance_scale": 4, "loras": [
        ["sd_xl_offset_example-lora_1.0", 0.1, "4852686128"]], "metadata_scheme": "fooocus",
    "negative_prompt": "", "performance": "Speed", "prompt": "a cat in a garden", "refiner_model": "None",
    "refiner_switch": 0.5, "resolution": "(896, 1152)", "sampler": "dpmpp_2m_sde_gpu", "scheduler": "karras",
    "seed": "1234567", "sharpness": 2, "steps": 30, "styles": "['Fooocus V2', 'Fooocus Enhance']",
    "vae": "Default (model)", "version": "Fooocus v2.5.5"}


def _check_fooocus(text):
    parsed = parse_infotext(text)
    assert parsed.prompt == "a cat in a garden, highly detailed <lora:sd_xl_offset_example-lora_1.0:0.1>"
    assert parsed.negative_prompt == "unrealistic, blurry"
    p = parsed.params
    assert p["Seed"] == "1234567" and p["Steps"] == "30" and p["CFG scale"] == "4"
    assert p["Sampler"] == "DPM++ 2M SDE" and p["Schedule type"] == "Karras" and p["Size"] == "896x1152"
    assert p["Model"] == "juggernautXL_v8Rundiffusion" and p["Model hash"] == "aeb7e9e689"
    assert p["Clip skip"] == "2"


def test_fooocus_json_scheme_png(tmp_path):
    path = _png(tmp_path / "f.png", parameters=FOOOCUS_META, fooocus_scheme="fooocus")
    found = read_image_parameters(path)
    _check_fooocus(found.infotext)
    assert found.source == "Fooocus"
    assert any("sharpness" in n for n in found.notes) and any("GPU" in n for n in found.notes)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_fooocus_json_in_exif(tmp_path, fmt):
    # Fooocus's JPEG/WebP: UserComment holds the JSON, MakerNote the scheme, Software the version.
    exif = Image.Exif()
    exif[0x9286] = json.dumps(FOOOCUS_META)
    exif[0x0131] = "Fooocus v2.5.5"
    exif[0x927C] = "fooocus"
    path = tmp_path / f"f.{fmt}"
    Image.new("RGB", (64, 64)).save(path, format=fmt.upper(), exif=exif)
    _check_fooocus(read_infotext(path)[0])


def test_fooocus_a1111_scheme_is_plain_infotext(tmp_path):
    text = ("a cat\nNegative prompt: blurry\nSteps: 30, Sampler: DPM++ 2M SDE Karras, Seed: 5, Size: 896x1152, "
            "CFG scale: 4, Sharpness: 2, Model: juggernautXL_v8Rundiffusion, Version: Fooocus v2.5.5")
    found = read_image_parameters(_png(tmp_path / "f.png", parameters=text, fooocus_scheme="a1111"))
    assert found.infotext == text and found.source is None


def test_a1111_parameters_win_over_comfyui_graph(tmp_path):
    # Some ComfyUI save nodes write an A1111 infotext besides the graph: it is what they mean to share.
    text = "a dog\nSteps: 12, Sampler: Euler, CFG scale: 5, Seed: 9, Size: 64x64"
    assert read_infotext(_png(tmp_path / "b.png", parameters=text, prompt=comfy_default_prompt()))[0] == text


def test_malformed_foreign_metadata_reads_nothing(tmp_path):
    path = _png(tmp_path / "m.png", prompt={"3": {"class_type": "KSampler", "inputs": {"steps": "x"}}},
                invokeai_metadata="{not json", Software="NovelAI", Comment="[]")
    text, items = read_infotext(path)
    assert text is not None and "Steps" not in parse_infotext(text).params   # nothing made up
    assert "invokeai_metadata" in items
    # A graph whose links loop, and JSON nested deeper than the parser's recursion limit.
    loop = comfy_default_prompt(positive=["20", 0])
    loop["20"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["21", 0],
                                                                  "conditioning_2": ["6", 0]}}
    loop["21"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["20", 0]}}
    assert _fields(_png(tmp_path / "loop.png", prompt=loop))[0] == "masterpiece best quality girl"
    deep = "{" + '"a":[' * 100000 + "]" * 100000 + "}"
    assert read_infotext(_png(tmp_path / "deep.png", prompt=deep, parameters=deep))[0] is None


def test_converted_parameters_fill_the_request_fields(tmp_path):
    # "Send to txt2img" and the API read the converted infotext through the same declarations.
    graph = comfy_default_prompt(sampler_name="dpmpp_2m", scheduler="karras", seed=77, steps=9, cfg=4.5)
    parsed = parse_infotext(read_infotext(_png(tmp_path / "s.png", prompt=graph))[0])
    known, _ = request_values_from_infotext(parsed.params)
    assert known["sampler_name"] == "DPM++ 2M" and known["scheduler"] == "Karras"
    assert (known["seed"], known["steps"], known["cfg_scale"]) == (77, 9, 4.5)
    assert (known["width"], known["height"]) == (512, 768)
    assert known["sd_model_checkpoint"] == "v1-5-pruned-emaonly"


def test_swarmui_parameters_json(tmp_path):
    meta = {"sui_image_params": {
        "prompt": "a 30 year old woman, portrait", "negativeprompt": "cartoon", "model": "Flux/flux1-dev-fp8",
        "seed": 2042464333, "steps": 25, "cfgscale": 1.0, "aspectratio": "Custom", "width": 512, "height": 768,
        "sampler": "euler", "scheduler": "normal", "vae": "ae.sft", "loras": ["detail"], "loraweights": ["0.8"],
        "swarm_version": "0.9.1.1", "date": "2024-08-07"},
        "sui_models": [{"name": "Flux/flux1-dev-fp8.safetensors", "param": "model",
                        "hash": "0x31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b"}]}
    prompt, negative, params = _fields(_png(tmp_path / "s.png", parameters=meta))
    assert (prompt, negative) == ("a 30 year old woman, portrait <lora:detail:0.8>", "cartoon")
    assert params["Seed"] == "2042464333" and params["Steps"] == "25" and params["CFG scale"] == "1"
    assert params["Sampler"] == "Euler" and params["Size"] == "512x768"
    assert params["Model"] == "flux1-dev-fp8" and params["Model hash"] == "31e35c80fc" and params["VAE"] == "ae"


def test_novelai_v4_negative_caption(tmp_path):
    comment = {"prompt": "2girls", "steps": 23, "scale": 5, "seed": 1, "sampler": "k_euler_ancestral",
               "width": 832, "height": 1216, "v4_negative_prompt": {"caption": {"base_caption": "blurry",
                                                                                "char_captions": []}}}
    _, negative, params = _fields(_png(tmp_path / "n4.png", Description="2girls", Software="NovelAI",
                                       Comment=comment))
    assert negative == "blurry" and params["Sampler"] == "Euler a"


def test_comfyui_efficiency_nodes(tmp_path):
    # The "Efficiency Nodes" pack: one loader node holds checkpoint, VAE, clip skip, a LoRA, both prompts and
    # the latent size; its sampler takes KSampler's inputs.
    graph = {
        "1": {"class_type": "Efficient Loader", "inputs": {
            "ckpt_name": "realisticVision_v51.safetensors", "vae_name": "Baked VAE", "clip_skip": -2,
            "lora_name": "epi_noiseoffset2.safetensors", "lora_model_strength": 0.7, "lora_clip_strength": 0.7,
            "positive": "a portrait of an old sailor", "negative": "painting, drawing",
            "token_normalization": "none", "weight_interpretation": "A1111",
            "empty_latent_width": 512, "empty_latent_height": 640, "batch_size": 1}},
        "2": {"class_type": "KSampler (Efficient)", "inputs": {
            "seed": 99, "steps": 30, "cfg": 6, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1,
            "preview_method": "auto", "vae_decode": "true", "model": ["1", 0], "positive": ["1", 1],
            "negative": ["1", 2], "latent_image": ["1", 3], "optional_vae": ["1", 4]}},
    }
    prompt, negative, params = _fields(_png(tmp_path / "e.png", prompt=graph))
    assert prompt == "a portrait of an old sailor <lora:epi_noiseoffset2:0.7>"
    assert negative == "painting, drawing"
    assert params["Seed"] == "99" and params["Steps"] == "30" and params["CFG scale"] == "6"
    assert params["Sampler"] == "DPM++ 2M" and params["Schedule type"] == "Karras" and params["Size"] == "512x640"
    assert params["Model"] == "realisticVision_v51" and params["Clip skip"] == "2" and "VAE" not in params


def _hide_in_alpha(image: Image.Image, magic: bytes, payload: bytes) -> Image.Image:
    """Write `payload` the way NovelAI's nai_meta_writer and the stealth-pnginfo extension do: magic, 32-bit
    big-endian length in bits, payload, one bit per alpha LSB, down each column first."""
    import numpy as np

    data = magic + (len(payload) * 8).to_bytes(4, "big") + payload
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    pixels = np.array(image.convert("RGBA"))
    alpha = pixels[:, :, 3].T.copy()            # columns as rows: fill in reading order
    flat = alpha.ravel()
    flat[: len(bits)] = (flat[: len(bits)] & 0xFE) | bits
    pixels[:, :, 3] = flat.reshape(alpha.shape).T
    return Image.fromarray(pixels, "RGBA")


def test_novelai_stealth_alpha_metadata(tmp_path):
    import gzip

    comment = {"prompt": "1girl, forest", "steps": 28, "height": 128, "width": 96, "scale": 6.0, "seed": 777,
               "sampler": "k_euler", "noise_schedule": "native", "uc": "lowres"}
    chunks = {"Title": "NovelAI generated image", "Description": "1girl, forest", "Software": "NovelAI",
              "Source": "NovelAI Diffusion V4 F6F29B7C", "Comment": json.dumps(comment)}
    image = _hide_in_alpha(Image.new("RGBA", (96, 128), (10, 20, 30, 255)), b"stealth_pngcomp",
                           gzip.compress(json.dumps(chunks).encode()))
    path = tmp_path / "stripped.png"
    image.save(path)                              # no text chunks: only the pixels carry the parameters
    found = read_image_parameters(path)
    parsed = parse_infotext(found.infotext)
    assert found.source == "NovelAI" and (parsed.prompt, parsed.negative_prompt) == ("1girl, forest", "lowres")
    assert parsed.params["Seed"] == "777" and parsed.params["Sampler"] == "Euler"
    assert parsed.params["Steps"] == "28" and parsed.params["Size"] == "96x128"
    # A1111's stealth-pnginfo extension, uncompressed: the infotext itself.
    text = "a boat\nSteps: 8, Sampler: Euler, CFG scale: 5, Seed: 3, Size: 64x64"
    _hide_in_alpha(Image.new("RGBA", (64, 64)), b"stealth_pnginfo", text.encode()).save(tmp_path / "a.png")
    assert read_infotext(tmp_path / "a.png")[0] == text
    # An ordinary transparent image reads as no parameters.
    Image.new("RGBA", (64, 64), (0, 0, 0, 128)).save(tmp_path / "plain.png")
    assert read_infotext(tmp_path / "plain.png")[0] is None
