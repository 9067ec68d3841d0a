"""Spoken digits drawn from a phrase: the audio domain (its default SpecGAN recipe on the eSpeak digits, or --data
given as a second argument) conditioned on the text domain's embedding of a phrase naming the digit. Conditional
accuracy is scored by the audio domain's reference classifier on phrases held out from training.
Usage: python examples/cross_modal/text_to_audio.py [RUN_DIR [AUDIO_DATA]]"""

import sys

from common import experiment

extra = {"data": sys.argv[2]} if len(sys.argv) > 2 else {}
experiment("text -> audio", sys.argv[1] if len(sys.argv) > 1 else "runs/text2audio", target="audio",
           condition="text", condition_data="digits", **extra)
