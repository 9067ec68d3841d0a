"""Digits drawn from a recording: the image domain conditioned on the audio domain's embedding of a spoken digit.
Pass a labelled folder of real speech (the Free Spoken Digit Dataset's 7_george_3.wav naming); conditional
accuracy is scored on recordings held out from training. Without a folder the offline eSpeak digits are used.
Usage: python examples/cross_modal/audio_to_image.py [SPEECH_DIR] [RUN_DIR]"""

import sys

from common import experiment

speech = sys.argv[1] if len(sys.argv) > 1 else ""
experiment("audio -> image", sys.argv[2] if len(sys.argv) > 2 else "runs/audio2image",
           condition="audio", condition_data=speech)
