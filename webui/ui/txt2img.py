"""The txt2img tab: widgets from the parameter declarations, one queued job per click, live progress.

The prompt row, common settings, results and job streaming are `ui_generation.GenerationTab`'s; this
tab adds the hires fix and queues `engine.txt2img`.
"""
from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from .generation import GenerationTab

log = logging.getLogger(__name__)

MODE = "txt2img"
LAYOUT_HIRES = (("hr_upscaler", "hr_second_pass_steps", "denoising_strength"), ("hr_scale", "hr_resize_x", "hr_resize_y"))


class Txt2ImgTab(GenerationTab):
    MODE = MODE
    TITLE = "txt2img"
    OUTPUT_KIND = "txt2img-images"

    def build(self) -> None:
        with gr.Tab("txt2img", id=MODE, elem_id="tab_txt2img") as self.tab:
            self.build_toprow()
            with gr.Row(equal_height=False, elem_id="txt2img_main_row"):
                with gr.Column(scale=1, elem_id="txt2img_settings"):
                    self.build_sampling()
                    with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hires"):
                        self._w("enable_hr")
                        for row in LAYOUT_HIRES:
                            with gr.Row():
                                for name in row:
                                    self._w(name)
                    self.build_size()
                    self.build_cfg_seed()
                    self.build_advanced(("enable_hr",) + LAYOUT_HIRES[0] + LAYOUT_HIRES[1])
                    self.build_extras()
                self.build_results()
        self.finish_build()

    def submit(self, req, values: dict[str, Any]):
        units = self.controlnet_units(values)
        if units:
            return self.services.submit_txt2img(req, controlnet=units)
        return self.services.submit_txt2img(req)
