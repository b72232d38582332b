"""``python -m peakllm ...``: see ``peakllm.cli``."""
import sys

from .cli import main

sys.exit(main())
