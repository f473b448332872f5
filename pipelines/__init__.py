"""The engine: checkpoints, loading, samplers, prompts, generation, outputs.

Nothing here imports gradio, and importing a module has no side effects (no model loads, no
thread or directory creation): state lives in objects the front ends create and pass around.
"""
