"""Spoken digits drawn from a handwritten one: the audio domain (its default SpecGAN recipe on the eSpeak digits, or
--data given as a second argument) conditioned on the image domain's embedding of an MNIST digit. Conditional
accuracy is scored by the audio domain's reference classifier on digit images held out from training.
Usage: python examples/cross_modal/image_to_audio.py [RUN_DIR [AUDIO_DATA]]"""

import sys

from common import experiment

extra = {"data": sys.argv[2]} if len(sys.argv) > 2 else {}
experiment("image -> audio", sys.argv[1] if len(sys.argv) > 1 else "runs/image2audio", target="audio",
           condition="image", **extra)
