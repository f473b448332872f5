"""Rewrite the README's performance table from bench/results/*.json.

    python -m bench report

Each result file contributes its headline figures; the table sits between the
`<!-- bench:start -->` and `<!-- bench:end -->` markers in README.md.
"""
from __future__ import annotations

import json

from bench.common import BENCH_DIR, RESULTS

README = BENCH_DIR.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

# result name → [(figure key, label, unit/format)]
HEADLINES: dict[str, list[tuple[str, str, str]]] = {
    "load": [("cold_load_s", "cold load, SD1.5 single file", "{} s"),
             ("raw_read_s", "raw read of the same file", "{} s"),
             ("cached_switch_s", "cached checkpoint switch", "{} s"),
             ("cold_over_cached_switch", "cold load / cached switch (target >= 20)", "{}x"),
             ("cold_over_raw", "cold load / raw read (target <= 2)", "{}x")],
    "txt2img": [("engine_s", "txt2img through the engine", "{} s"),
                ("bare_diffusers_s", "bare diffusers call, same model", "{} s"),
                ("engine_over_bare", "engine / bare diffusers (target <= 1.05)", "{}x")],
    "startup": [("median_seconds", "start to UI answering, no model (target <= 10)", "{} s")],
    "presets": [("balanced_s", "Balanced preset, one 512x512 image", "{} s"),
                ("fast_s", "Fast LCM 4 steps preset, one 512x512 image", "{} s"),
                ("balanced_over_fast", "Balanced / Fast (target >= 10)", "{}x")],
    "speed": [("unet_step_s_fp32", "UNet CFG step fp32", "{} s"), ("unet_step_s_bf16", "UNet CFG step bf16", "{} s"),
              ("bf16_speedup_over_fp32", "bf16 / fp32 speed-up (target >= 1.5)", "{}x"),
              ("fraction_of_peak_bf16", "bf16 UNet step, fraction of matmul peak (target >= 0.5)", "{}")],
    "interrogate": [("fast_s", "interrogate fast mode", "{} s"), ("best_s", "interrogate best mode", "{} s")],
    "controlnet": [("controlnet_enable_cold_s", "ControlNet enable, SD1.5 size, from disk", "{} s"),
                   ("controlnet_swap_from_disk_s", "ControlNet swap, from disk", "{} s"),
                   ("controlnet_swap_cached_s", "ControlNet swap, cached", "{} s"),
                   ("checkpoint_reload_warm_s", "the alternative: checkpoint reload (warm page cache)", "{} s"),
                   ("checkpoint_disk_loads_during_controlnet_changes", "checkpoint reads during ControlNet changes",
                    "{}")],
}


def rows() -> list[str]:
    out = ["| benchmark | figure | value | conditions | date |", "|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        figs = data.get("figures", {})
        cond = ", ".join(f"{k}={figs[k]}" for k in ("precision", "size", "steps") if k in figs)
        for key, label, fmt in HEADLINES.get(data["name"], []):
            if key in figs:
                out.append(f"| {data['name']} | {label} | {fmt.format(figs[key])} | {cond} | {data['date'][:10]} |")
    return out


def main(argv=None) -> None:
    text = README.read_text()
    table = "\n".join([START, *rows(), END])
    if START in text and END in text:
        text = text[: text.index(START)] + table + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + table + "\n"
    README.write_text(text)
    print(table)


if __name__ == "__main__":
    main()
