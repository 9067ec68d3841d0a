"""The upper bound of the audio rows of the cross-modal table: the audio domain conditioned on the class label
itself (the default run). Usage: python examples/cross_modal/label_bound_audio.py [RUN_DIR [AUDIO_DATA]]"""

import sys

from common import experiment

extra = {"data": sys.argv[2]} if len(sys.argv) > 2 else {}
experiment("label -> audio (upper bound)", sys.argv[1] if len(sys.argv) > 1 else "runs/label2audio", target="audio",
           **extra)
