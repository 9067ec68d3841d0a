"""Property-based tests (hypothesis) of the folder and file loaders: whatever bytes a file holds (corrupt or
truncated images and sounds, NaN samples, odd rates and widths, stereo, binary or non-UTF-8 text, blank lines), a
loader either reads it, warns naming the file and skips it, or fails with one GenkitError line; it never raises
anything else and never hands NaN to training. A folder where every file is bad is an error, not an empty run."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import genkit_audio.data as audata
import genkit_image.data as imdata
import genkit_text.data as tdata
from genkit import GenkitError

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _png(side: int, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), 128, dtype=np.uint8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def _wav(samples: np.ndarray, rate: int, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


image_bytes = st.one_of(
    st.binary(max_size=300),  # garbage
    st.builds(lambda s, m, cut: _png(s, m)[:cut], st.integers(1, 40), st.sampled_from(["L", "RGB", "RGBA", "P", "I;16"]),
              st.integers(0, 400)),  # truncated (or whole, when cut is past the end)
    st.builds(_png, st.integers(1, 40), st.sampled_from(["L", "RGB", "RGBA", "P", "1"])),
)
audio_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, ch, r, sub, nan: _wav(np.where(nan, np.nan, np.zeros((n, ch))) if sub == "FLOAT" else
                                               np.zeros((n, ch)), r, sub),
              st.integers(0, 400), st.integers(1, 3), st.sampled_from([1000, 8000, 11025, 44100, 96000]),
              st.sampled_from(["PCM_16", "PCM_U8", "FLOAT", "PCM_24"]), st.booleans()),
)


def _folder(kind: str, payload: bytes, with_good: bool) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"fuzz-{kind}-"))
    if kind == "image":
        (root / "bad.png").write_bytes(payload)
        if with_good:
            (root / "good.png").write_bytes(_png(28, "L"))
    else:
        (root / "bad.wav").write_bytes(payload)
        if with_good:
            (root / "good.wav").write_bytes(_wav(np.sin(np.arange(4000) / 5.0) * 0.5, 8000, "PCM_16"))
    return root


def _load(kind: str, root: Path):
    if kind == "image":
        x, *_ = imdata.load_folder(root, 28, 1)
        return x.float()
    x, *_ = audata.load_folder(root, 4096, 8000)
    return x.float()


@pytest.mark.parametrize("kind", ["image", "audio"])
def test_any_bytes_in_a_folder_are_read_or_skipped_by_name_or_one_line_error(kind, cache, capsys):
    strategy = image_bytes if kind == "image" else audio_bytes

    @SETTINGS
    @given(payload=strategy, with_good=st.booleans())
    def check(payload, with_good):
        root = _folder(kind, payload, with_good)
        try:
            x = _load(kind, root)
        except GenkitError as exc:
            message = exc.format_message()
            assert "\n" not in message and str(root) in message  # one line, naming the folder
            assert not with_good  # a folder with a readable file is never refused for a bad one
            return
        finally:
            err = capsys.readouterr().err
            shutil.rmtree(root)
        assert x.numel() > 0 and bool(x.isfinite().all())  # never NaN into training
        if len(x) == (2 if with_good else 1):
            return  # the bad file was readable after all
        assert f"{root / ('bad.png' if kind == 'image' else 'bad.wav')}: skipped" in err  # skipped, by name

    check()


@SETTINGS
@given(payload=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                         st.sampled_from([b"", b"\n\n  \n", b"\xef\xbb\xbf", b"\xff\xfe\x00a"])))
def test_any_bytes_as_a_text_corpus_are_examples_or_one_line_error(payload):
    root = Path(tempfile.mkdtemp(prefix="fuzz-text-"))
    path = root / "corpus.txt"
    path.write_bytes(payload)
    try:
        examples, _ = tdata.read_text_examples(path)
    except GenkitError as exc:
        assert "\n" not in exc.format_message() and str(path) in exc.format_message()
        return
    finally:
        shutil.rmtree(root)
    assert examples and all(e.strip() and "\n" not in e for e in examples)
