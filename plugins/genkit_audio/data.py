"""Audio data for the audio domain: the embedded spoken-digit corpus and folders of audio files.

Every source becomes an int16 tensor (N, 1, length) at one sample rate (``--sample-rate``; by default the
data's own) plus optional integer labels; the domain turns int16 into floats in [-1, 1] on the device,
batch by batch.

- ``espeak-digits`` (default, offline): the words "zero".."nine" spoken by eSpeak NG, whose shared library
  and voice data ship in the ``espeakng-loader`` wheel (driven here through ``ctypes``); its rate is 16 kHz
  (eSpeak's 22.05 kHz resampled), or any other rate asked for. Each clip draws an
  English accent, a voice variant (male, female, Klatt, croaky...), a pitch, a pitch range and a speaking
  rate, so the corpus is varied the way a multi-speaker corpus is (though all synthetic). It is the
  closest offline stand-in for SC09, the paper's spoken-digit benchmark. Generated once (a few seconds)
  and cached under ``cache_dir``.
- a folder: WAV/FLAC/OGG files found recursively and read with ``soundfile`` (torchaudio 2.9+ has no file
  I/O), mixed to mono, resampled with torchaudio to the asked rate (by default the rate most of the files
  have), trimmed or zero-padded to ``length``. Class
  labels come from first-level sub-folder names, else from a ``label_`` file-name prefix (the Free
  Spoken Digit Dataset's ``7_jackson_32.wav``); where both are there and each file's folder is one of its
  name's later fields (AudioMNIST's ``01/7_01_32.wav``: a folder per speaker), from the prefix (``label_scheme``;
  ``--labels`` decides instead). Bad files are skipped with a warning naming each one.
"""

from __future__ import annotations

import ctypes
import math
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from genkit import GenkitError, warn
from genkit.files import atomic_write

SAMPLE_RATE = 16000  # the eSpeak corpus's own rate
RATES = (8000, 16000, 22050, 44100)  # the sample rates a run can have (--sample-rate)
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga"}
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# eSpeak NG corpus recipe. Changing anything here changes the corpus: bump CORPUS_VERSION.
CORPUS_VERSION = 2  # 2: eSpeak's noise seeded for each clip, the same corpus on every machine (1 varied by process)
CLIPS_PER_DIGIT = 200  # 2,000 clips: about 0.6 h of SC09's 18,620 but plenty for a CPU run
ACCENTS = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "klatt4", "croak", "Andy", "Annie", "Denis", "Gene", "Lee", "Mike", "Storm", "adam",
            "anika", "belinda", "benjamin", "david", "ed", "edward", "grandma", "grandpa", "ian", "john",
            "linda", "max", "michel", "norbert", "paul", "quincy", "rob", "robert", "steph", "travis", "victor",
            "zac"]
MAX_OFFSET = 0.15  # clips start at a random offset of up to 0.15 s, like the loose alignment of SC09


# -- eSpeak NG through ctypes ------------------------------------------------------------------------
class _ESpeak:
    """The few eSpeak NG calls needed to render a word to 16-bit samples (synchronous mode)."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    @staticmethod
    def check_installed() -> None:
        try:
            import espeakng_loader  # noqa: F401
        except ImportError:
            raise GenkitError("the default audio data needs the espeakng-loader package "
                              "(pip install espeakng-loader), or pass --data FOLDER") from None

    def __init__(self) -> None:
        self.check_installed()
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # 2 = AUDIO_OUTPUT_SYNCHRONOUS
        if rate <= 0:
            raise GenkitError("eSpeak NG failed to initialise (espeakng-loader's library or voice data is broken)")
        self.rate = rate
        self.lib = lib
        # eSpeak's noise (breath, frication) comes from its own generator, which starts from a different state in every
        # process: unseeded, the same words render differently on every machine. say() seeds it before every word.
        self._seed = getattr(lib, "espeak_ng_SetRandSeed", None)  # eSpeak NG 1.52+
        if self._seed is not None:
            self._seed.argtypes, self._seed.restype = [ctypes.c_long], None
        self._chunks: list[np.ndarray] = []
        self._cb = self._CALLBACK(self._collect)  # keep a reference: eSpeak holds the pointer
        lib.espeak_SetSynthCallback(self._cb)

    def _collect(self, wav, n, events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def say(self, word: str, voice: str, rate: int, pitch: int, pitch_range: int, seed: int = 1) -> np.ndarray:
        """``word`` as int16 samples at ``self.rate``. eSpeak also carries state from word to word (its pitch
        flutter's phase...): the same words in the same order from a fresh start render the same samples."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise GenkitError(f"eSpeak NG has no voice {voice!r}")
        for param, value in ((1, rate), (3, pitch), (4, pitch_range)):  # espeakRATE, espeakPITCH, espeakRANGE
            self.lib.espeak_SetParameter(param, value, 0)
        if self._seed is not None:
            self._seed(seed)
        self._chunks = []
        text = word.encode()
        self.lib.espeak_Synth(text, len(text) + 1, 0, 1, 0, 0, None, None)  # 1 = POS_CHARACTER
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def _trim_silence(x: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > threshold * np.abs(x).max())
    return x[loud[0]:loud[-1] + 1] if len(loud) else x[:0]


def fft_resample(x: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling by truncating the spectrum (as scipy.signal.resample). eSpeak's clips begin and
    end in silence, so the FFT's periodic edges do no harm, and it is ~100x faster than torchaudio's polyphase
    resampler for 22050 -> 16000 Hz (a 441/320 ratio), which would take a minute for the whole corpus."""
    n = len(x)
    m = int(round(n * new_rate / rate))
    spec = np.fft.rfft(x)[: m // 2 + 1]
    return (np.fft.irfft(spec, m) * (m / n)).astype(np.float32)


def synthesise_digits(clips_per_digit: int = CLIPS_PER_DIGIT, seed: int = 0,
                      rate: int = SAMPLE_RATE) -> tuple[list[np.ndarray], list[int]]:
    """Render ``clips_per_digit`` varied utterances of each digit; float32 clips at ``rate``, peak 0.5-0.95.

    In a fresh Python process, so that eSpeak starts from its initial state (it carries some from word to word)
    and the corpus is the same whatever this process said before: on every machine, in every call. A plain child
    process (not multiprocessing's spawn, which would import the caller's main script again)."""
    _ESpeak.check_installed()
    with tempfile.TemporaryDirectory(prefix="genkit-espeak-") as tmp:
        out = Path(tmp) / "clips.npz"
        code = (f"from {__name__} import _synthesise_here; _synthesise_here("
                f"{int(clips_per_digit)}, {int(seed)}, {int(rate)}, {str(out)!r})")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise GenkitError(f"eSpeak NG could not synthesise the spoken digits ({last.split('Error: ')[-1]}); "
                              "reinstall espeakng-loader, or pass --data FOLDER")
        with np.load(out) as npz:
            flat, ends, labels = npz["audio"], npz["ends"], npz["labels"]
    return np.split(flat, ends[:-1]), labels.tolist()


def _synthesise_here(clips_per_digit: int, seed: int, rate: int, out: str) -> None:
    """synthesise_digits in this process, written to ``out`` (npz: the clips end to end, their ends, labels)."""
    espeak = _ESpeak()
    rs = np.random.RandomState(seed)
    clips, labels = [], []
    for i in range(clips_per_digit):
        for label, word in enumerate(DIGITS):
            voice = f"{ACCENTS[rs.randint(len(ACCENTS))]}+{VARIANTS[rs.randint(len(VARIANTS))]}"
            raw = espeak.say(word, voice, rate=int(rs.randint(110, 231)), pitch=int(rs.randint(15, 86)),
                             pitch_range=int(rs.randint(20, 91)), seed=1 + 10 * i + label + 100_003 * seed)
            x = _trim_silence(fft_resample(raw.astype(np.float32) / 32768.0, espeak.rate, rate))
            if len(x) == 0:
                continue
            x = x / np.abs(x).max() * rs.uniform(0.5, 0.95)
            clips.append(x.astype(np.float32))
            labels.append(label)
    with open(out, "wb") as f:
        np.savez(f, audio=np.concatenate(clips), ends=np.cumsum([len(c) for c in clips]), labels=np.array(labels))


def espeak_digits(cache_dir: Path, length: int,
                  rate: int = SAMPLE_RATE) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    """The cached spoken-digit corpus as int16 (N, 1, length) at ``rate``, generating it on first use."""
    suffix = "" if rate == SAMPLE_RATE else f"-{rate}"
    cache = Path(cache_dir) / "audio" / f"espeak-digits-v{CORPUS_VERSION}{suffix}.npz"
    if not cache.is_file():
        clips, labels = synthesise_digits(rate=rate)
        rs = np.random.RandomState(1)
        max_offset = int(MAX_OFFSET * rate)
        offsets = np.array([rs.randint(0, max_offset + 1) for _ in clips])
        flat = np.concatenate([np.round(c * 32767).astype(np.int16) for c in clips])
        ends = np.cumsum([len(c) for c in clips])

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz" to the temporary name
                np.savez(f, audio=flat, ends=ends, offsets=offsets, labels=np.array(labels, np.int64))

        atomic_write(cache, write)  # never a half-written cache
    with np.load(cache) as npz:
        flat, ends, offsets, labels = npz["audio"], npz["ends"], npz["offsets"], npz["labels"]
    x = np.zeros((len(ends), 1, length), np.int16)
    starts = np.concatenate([[0], ends[:-1]])
    for i, (s, e, o) in enumerate(zip(starts, ends, offsets)):
        clip = flat[s:e][: length - o]
        x[i, 0, o:o + len(clip)] = clip
    return (torch.from_numpy(x), torch.from_numpy(labels), list(DIGITS),
            f"spoken digits 'zero'..'nine' synthesised with eSpeak NG ({len(x)} clips at {rate} Hz, cached in {cache.parent})")


# -- folders -----------------------------------------------------------------------------------------
def _label_of(path: Path, root: Path, scheme: str) -> str:
    if scheme == "folder":
        return path.relative_to(root).parts[0]
    return path.name.split("_", 1)[0]


def label_scheme(root: Path, files: list[Path], asked: str | None = None) -> str:
    """Where the labels of a folder's ``files`` are read: "folder" (first-level sub-folder names), "prefix" (the
    ``label_`` start of each file name) or "none". ``asked`` (``--labels``) decides when given; a file it cannot
    label is a one-line error naming it. Auto: sub-folders when every file is in one, else prefixes when every
    name has one; where both are there, prefixes when every file's folder is one of its name's later fields
    (AudioMNIST's ``01/7_01_32.wav``, a folder of each speaker's recordings of every digit: the folder repeats
    what the name says), sub-folders otherwise (Speech Commands' ``seven/0a7c2a8d_nohash_0.wav``)."""
    rel = [p.relative_to(root) for p in files]
    nested = [len(r.parts) > 1 for r in rel]
    prefixed = ["_" in r.name and bool(r.name.split("_", 1)[0]) for r in rel]
    if asked == "none":
        return "none"
    if asked in ("folder", "prefix"):
        ok = nested if asked == "folder" else prefixed
        if not all(ok):
            bad = rel[ok.index(False)]
            what = "is not in a sub-folder" if asked == "folder" else "has no label_ prefix in its name"
            raise GenkitError(f"{root / bad}: --labels {asked}, but the file {what}", exit_code=2)
        return asked
    if all(nested) and all(prefixed):
        repeats = all(r.parts[0] in Path(r.name).stem.split("_")[1:] for r in rel)
        return "prefix" if repeats else "folder"
    if all(nested):
        return "folder"
    return "prefix" if all(prefixed) else "none"


def fit_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Trim or zero-pad the last dimension to ``length`` samples (keeps the start)."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return torch.nn.functional.pad(x, (0, length - x.shape[-1]))


def read_audio(path: Path) -> tuple[torch.Tensor, int]:
    """Read any file soundfile understands as a mono float32 tensor and its sample rate."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.mean(axis=1))), int(rate)


def load_folder(root: Path, length: int | None, rate: int | None, choose_length=None,
                cache_params: dict | None = None, max_rate: int | None = None,
                labels: str | None = None,
                files: list[Path] | None = None) -> tuple[torch.Tensor, torch.Tensor | None, list[str], str, int]:
    """Every readable audio file under ``root`` as int16 (N, 1, length) at ``rate`` Hz, with labels where
    ``label_scheme`` finds them (``labels``: ``--labels``, None = auto). ``rate=None``: the rate most files have
    (others are resampled to it), at most ``max_rate``; ``length=None``: ``choose_length(rate)``. Returns (clips,
    labels or None, class names, a description, rate). Decoded once: later runs read it from the decoded-data cache
    (genkit.datacache), keyed also by ``cache_params`` (what ``choose_length`` depends on). ``files``: the folder's
    ``audio_files`` when the caller has listed them already."""
    from genkit.datacache import cached

    files = audio_files(root) if files is None else files
    scheme = label_scheme(root, files, labels)
    x, y, classes, source, rate = cached("audio-folder", root, files,
                                         {"length": length, "rate": rate, "max_rate": max_rate, "labels": scheme,
                                          **(cache_params or {})},
                                         lambda: _decode_folder(root, files, length, rate, choose_length, max_rate,
                                                                scheme))
    return x, y, list(classes), source, int(rate)


def audio_files(root: Path) -> list[Path]:
    """The audio files under ``root``, recursively and sorted; none is a one-line error."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise GenkitError(f"{root}: no audio files found (looked for {', '.join(sorted(AUDIO_EXTENSIONS))}, recursively)")
    return files


def _decode_folder(root: Path, files: list[Path], length: int | None, rate: int | None, choose_length,
                   max_rate: int | None = None, scheme: str = "none"):
    scheme = "" if scheme == "none" else scheme
    read, names, bad = [], [], 0
    for p in files:
        try:
            x, file_rate = read_audio(p)
            if x.numel() == 0:
                raise ValueError("no samples")
            if not torch.isfinite(x).all():
                raise ValueError("non-finite samples")
        except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError... for bad files
            reason = "zero-length" if str(exc) == "no samples" else f"{exc.__class__.__name__}"
            warn(f"{p}: skipped, not readable audio ({reason})")
            bad += 1
            continue
        read.append((x, file_rate))
        names.append(_label_of(p, root, scheme) if scheme else "")
    if bad:
        warn(f"{root}: skipped {bad} bad file(s) of {len(files)}")
    if not read:
        raise GenkitError(f"{root}: none of the {len(files)} audio files could be read")
    resampled = ""
    if rate is None:
        rates = [r for _, r in read]
        rate = data_rate(root, rates, max_rate)
        common = commonest(rates)
        if common != rate:
            resampled = f" from {common} Hz files"
    if length is None:
        length = choose_length(rate)
    x = to_clips(read, rate, length, name=root)
    classes = sorted(set(names)) if scheme else []
    y = torch.tensor([classes.index(n) for n in names], dtype=torch.int64) if scheme else None
    how = {"folder": ", labels from sub-folders", "prefix": ", labels from file-name prefixes", "": ""}[scheme]
    return x, y, classes, f"{root} ({len(x)} clips at {rate} Hz{resampled}{how})", rate


CUT_WARNING = 0.25  # warn when more than this share of the clips is cut to the run's length


def to_clips(read: list[tuple[torch.Tensor, int]], rate: int, length: int, name=None) -> torch.Tensor:
    """Mono float waves at their own rates as int16 clips (N, 1, length) at ``rate``: resampled, cut or
    zero-padded, clamped to [-1, 1]. With ``name`` (the folder), a warning naming it when more than a quarter of
    the clips are longer than ``length`` and lose their end."""
    import torchaudio.functional as AF

    cut = sum(len(x) * rate / r > length * 1.01 for x, r in read)  # 1 %: a resampler's rounding is not a cut
    if name is not None and cut > CUT_WARNING * len(read):
        warn(f"{name}: {cut} of {len(read)} clips ({cut / len(read):.0%}) are longer than {length} samples "
             f"({length / rate:.2f} s at {rate} Hz) and were cut to their start; a lower --sample-rate holds more "
             "of each clip")

    waves = [fit_length(AF.resample(x, r, rate) if r != rate else x, length) for x, r in read]
    return torch.round(torch.stack(waves)[:, None].clamp(-1.0, 1.0) * 32767).to(torch.int16)


def commonest(rates: list[int]) -> int:
    """The sample rate most files have (the higher one on a tie)."""
    counts = Counter(rates)
    return max(counts, key=lambda r: (counts[r], r))


def data_rate(root: Path, rates: list[int], max_rate: int | None = None) -> int:
    """The run's rate for files at ``rates``: the commonest, at most ``max_rate`` (the model's cap: the run's
    first line says so), otherwise the next supported rate up (a warning says so)."""
    counts, common = Counter(rates), commonest(rates)
    rate = min(common, max_rate) if max_rate else common
    if len(counts) > 1:
        warn(f"{root}: files at {len(counts)} sample rates ({', '.join(f'{r} Hz' for r in sorted(counts))}); "
             f"resampling all to {rate} Hz (--sample-rate to choose)")
    if rate in RATES:
        return rate
    up = min((r for r in RATES if r >= rate), default=RATES[-1])
    warn(f"{root}: {rate} Hz is not a supported rate; resampling to {up} Hz ({', '.join(map(str, RATES))})")
    return up


# -- where the words sit in their clips (--lead auto) ------------------------------------------------
LEAD = 0.2  # the lead --lead auto gives recordings trimmed to the word (measured on FSDD: docs/audio.md)
QUIET_DB = -30.0  # a 10 ms frame this far below the clip's loudest frame is quiet
AT_START = 0.05  # "trimmed to the word": half of the clips are loud within their first 5 %
MAY_CUT = 0.05  # the lead may cut the loud end of at most 1 clip in 20


def word_edges(x: torch.Tensor, rate: int, frame_s: float = 0.01, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """For int16 clips (N, 1, T): where each clip's first loud 10 ms frame starts and how much of it is quiet after
    its last loud frame, both as fractions of the clip. A frame is loud within ``QUIET_DB`` of the clip's loudest;
    a silent clip counts as loud throughout (no room at either end)."""
    frame = max(1, round(frame_s * rate))
    onsets, tails = [], []
    for part in x.split(chunk):
        wave = part.reshape(len(part), -1).float()
        n = wave.shape[1] // frame
        rms = wave[:, : n * frame].reshape(len(part), n, frame).pow(2).mean(dim=2).sqrt()
        loud = rms >= rms.amax(dim=1, keepdim=True) * 10 ** (QUIET_DB / 20)
        loud[rms.amax(dim=1) == 0] = True
        first = loud.float().argmax(dim=1)
        last = n - 1 - loud.flip(1).float().argmax(dim=1)
        onsets.append(first.float() / n)
        tails.append((n - 1 - last).float() / n)
    return torch.cat(onsets), torch.cat(tails)


def auto_lead(x: torch.Tensor, rate: int) -> float:
    """``--lead auto``: ``LEAD`` for clips trimmed to the word (the median clip is loud within its first
    ``AT_START``), else 0, and never more than the quiet end that all but ``MAY_CUT`` of the clips have, so that the
    shift cuts few words' ends (SC09-like clips with words anywhere get no lead, which they do not need). Rounded
    down to 0.01 of the clip."""
    if len(x) == 0:
        return 0.0
    onset, tail = word_edges(x, rate)
    if float(onset.median()) > AT_START:
        return 0.0
    room = float(torch.quantile(tail, MAY_CUT))
    return math.floor(round(min(LEAD, room) * 100, 6)) / 100
