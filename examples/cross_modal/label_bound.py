"""The upper bound of the cross-modal table: the image domain conditioned on the class label itself (the default
run). Usage: python examples/cross_modal/label_bound.py [RUN_DIR]"""

import sys

from common import experiment

experiment("label -> image (upper bound)", sys.argv[1] if len(sys.argv) > 1 else "runs/label2image")
