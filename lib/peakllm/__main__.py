"""``python -m peakllm ...``: see ``peakllm.workbook.cli``."""
import sys

from .workbook.cli import main

sys.exit(main())
