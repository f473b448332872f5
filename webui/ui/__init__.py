"""The Gradio Blocks UI: tabs and panels built from the parameter declarations."""
