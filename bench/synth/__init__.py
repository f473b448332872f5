"""Synthetic Stable Diffusion models (random weights, real architectures) in real on-disk layouts.

    from bench.synth import ARCHS, tiny_pipeline, write_single_file, write_diffusers_folder, write_config_folder
    from bench.synth import tiny_controlnet, write_controlnet
"""
from .factory import (ARCHS, full_size_ldm_state_dict, full_size_pipeline_skeleton, full_size_sd15_controlnet_file,
                      full_size_sd15_single_file, full_size_sdxl_single_file, pipeline_class, tiny_configs,
                      tiny_controlnet, tiny_pipeline, write_config_folder, write_controlnet, write_diffusers_folder,
                      write_single_file)
from .ldm_export import component_to_ldm, controlnet_to_ldm, export_single_file, export_vae_file, pipeline_to_ldm

__all__ = ["ARCHS", "tiny_pipeline", "tiny_configs", "pipeline_class", "write_diffusers_folder", "write_single_file",
           "write_config_folder", "full_size_sd15_single_file", "export_single_file", "export_vae_file",
           "pipeline_to_ldm", "tiny_controlnet", "write_controlnet", "full_size_sd15_controlnet_file",
           "controlnet_to_ldm", "full_size_sdxl_single_file", "full_size_ldm_state_dict",
           "full_size_pipeline_skeleton", "component_to_ldm"]
