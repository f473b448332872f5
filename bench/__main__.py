"""`python -m bench NAME [args]` runs bench/NAME.py (load, txt2img, startup, interrogate, ...)."""
import importlib
import sys

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    print(__doc__)
    sys.exit(2)
importlib.import_module(f"bench.{sys.argv[1]}").main(sys.argv[2:])
