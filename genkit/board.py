"""TensorBoard logging (``--tensorboard``): the metrics records and the snapshots, under ``RUN/tensorboard/``.

An optional extra (``pip install 'genkit[tensorboard]'``). Only with the setting on, the engine calls
:func:`check_available` while validating a run (before anything is written), makes a :class:`Board` when the run
starts (``close`` when it ends, however it ends), and calls ``Board.metrics`` for each metrics.jsonl record and
``Board.snapshot`` with the files of each snapshot. Snapshots go by the type of the files written, so a third-party
domain's work too: ``.png`` (and ``.jpg``) as images, ``.wav`` (and ``.flac``/``.ogg``) as audio at the file's own
sample rate, ``.txt`` as text. Tags:

    loss/loss_d, loss/loss_g, loss/penalty      the record's losses (metrics.jsonl)
    D/real, D/fake                              mean discriminator outputs
    eval/NAME                                   every metric of the domain's evaluation (refnet_fd, bleu_4, ...)
    pretrain/NAME                               the pre-training phases' own metrics (step 0)
    lr/generator, lr/discriminator              the optimizers' learning rates
    time/seconds                                training seconds so far (``seconds`` of the losses' lines)
    time/step_seconds, time/steps_per_second    speed since the previous record
    samples/image, samples/audio, samples/text  a snapshot written as one file (samples/step-00000500.png); text
                                                is stored by TensorBoard as samples/text/text_summary
    samples/STEM                                a snapshot written as a folder of files (samples/step-00000500/03-two.wav)

This module imports no torch and no tensorboard until a ``Board`` is made.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import GenkitError

INSTALL = "pip install 'genkit[tensorboard]'"
KNOWN = {"loss_d": "loss/loss_d", "loss_g": "loss/loss_g", "penalty": "loss/penalty", "d_real": "D/real",
         "d_fake": "D/fake", "seconds": "time/seconds"}
IMAGES = (".png", ".jpg", ".jpeg")
AUDIO = (".wav", ".flac", ".ogg")
TEXT = (".txt",)


def check_available() -> None:
    """Raise a one-line ``GenkitError`` when ``torch.utils.tensorboard`` cannot be used (tensorboard absent)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise GenkitError(f"--tensorboard needs the tensorboard package: {INSTALL}") from None


def scalar_tags(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one metrics record, by tag: every number but ``step`` (booleans and strings are skipped)."""
    group = "pretrain" if "phase" in record else "eval"
    out = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key == "seconds" and "loss_d" not in record and "phase" not in record:
            continue  # an evaluation's line repeats the time of the losses' line at its step
        out[KNOWN.get(key, f"{group}/{key}")] = float(value)
    return out


class Board:
    """A ``SummaryWriter`` on ``folder``; ``purge_step`` (a resume's step + 1) drops what a killed run logged later."""

    def __init__(self, folder: Path, purge_step: int | None = None):
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder)
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=purge_step)
        self._last: tuple[int, float] | None = None  # (step, seconds) of the previous record with losses

    def metrics(self, record: Mapping[str, Any], lr: Mapping[str, float] | None = None) -> None:
        """One metrics.jsonl record (and the learning rates) at the record's step; flushed."""
        step = int(record.get("step", 0))
        for tag, value in scalar_tags(record).items():
            self.writer.add_scalar(tag, value, step)
        seconds = record.get("seconds")
        if "loss_d" in record:
            for name, value in (lr or {}).items():
                self.writer.add_scalar(f"lr/{name}", float(value), step)
            if isinstance(seconds, (int, float)) and self._last is not None and step > self._last[0]:
                per_step = (float(seconds) - self._last[1]) / (step - self._last[0])
                if per_step > 0 and math.isfinite(per_step):
                    self.writer.add_scalar("time/step_seconds", per_step, step)
                    self.writer.add_scalar("time/steps_per_second", 1.0 / per_step, step)
        if ("loss_d" in record or "phase" in record) and isinstance(seconds, (int, float)):
            self._last = (step, float(seconds))  # a pre-training phase's time is not a training step's
        self.writer.flush()

    def start(self, step: int, seconds: float) -> None:
        """Where speed is measured from (a resume does not count the time before it as one long step)."""
        self._last = (step, seconds)

    def snapshot(self, files: Iterable[Path], samples_dir: Path, step: int) -> None:
        """The files of one snapshot: images as images, audio as audio, text as text; other files are skipped."""
        for file in files:
            file = Path(file)
            suffix = file.suffix.lower()
            kind = "image" if suffix in IMAGES else "audio" if suffix in AUDIO else "text" if suffix in TEXT else None
            if kind is None or not file.is_file():
                continue
            tag = f"samples/{kind}" if file.parent == Path(samples_dir) else f"samples/{file.stem}"
            if kind == "image":
                self._image(tag, file, step)
            elif kind == "audio":
                self._audio(tag, file, step)
            else:
                text = file.read_text(encoding="utf-8", errors="replace")
                # TensorBoard renders Markdown: an indented code block keeps the samples' lines and characters.
                self.writer.add_text(tag, "\n".join(f"    {line}" for line in text.splitlines()), step)
        self.writer.flush()

    def _image(self, tag: str, file: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(file) as img:
            pixels = np.asarray(img.convert("RGBA" if "A" in img.getbands() else "RGB"))
        self.writer.add_image(tag, pixels, step, dataformats="HWC")

    def _audio(self, tag: str, file: Path, step: int) -> None:
        import numpy as np
        import soundfile

        wave, rate = soundfile.read(str(file), dtype="float32", always_2d=True)
        mono = np.clip(wave.mean(axis=1), -1.0, 1.0)
        self.writer.add_audio(tag, mono, step, sample_rate=int(rate))

    def close(self) -> None:
        self.writer.close()


__all__ = ["Board", "INSTALL", "check_available", "scalar_tags"]
