"""Digits drawn from a phrase: the image domain conditioned on the text domain's embedding of a phrase naming the
digit ("seven", "the number 7", "a handwritten seven", ...). Conditional accuracy is scored on phrases held out
from training. Usage: python examples/cross_modal/text_to_image.py [RUN_DIR]"""

import sys

from common import experiment

experiment("text -> image", sys.argv[1] if len(sys.argv) > 1 else "runs/text2image",
           condition="text", condition_data="digits")
