"""genkit's audio domain: WaveGAN and SpecGAN (Donahue, McAuley & Puckette, "Adversarial Audio Synthesis",
ICLR 2019) at the data's own sample rate (8, 16, 22.05 or 44.1 kHz), writing 16-bit PCM WAV files and a PNG of
their spectrograms. The CPU default is a small SpecGAN (the paper found SpecGAN's spoken digits easier to
recognise than WaveGAN's); ``--preset paper`` is the authors' WaveGAN.

This module is imported when genkit loads its plugins, so it imports no torch; the model, data and I/O
modules are imported by the methods that need them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genkit import Data, Domain, GenkitError, hookimpl, labels_are_classes, option


@dataclass(frozen=True)
class AudioOptions:
    model: Literal["wavegan", "specgan"] = option("wavegan", "wavegan (raw waveform) or specgan (spectrogram + "
                                                             "Griffin-Lim).")
    sample_rate: Literal[8000, 16000, 22050, 44100] | None = option(
        None, "Sample rate in Hz of training and output (auto: the data's own, at most 16000 for SpecGAN, whose "
              "16,384-sample clips last 1.02 s at 16 kHz and 0.37 s at 44.1 kHz; other rates are resampled).")
    length: Literal[8192, 16384, 32768, 65536] | None = option(
        None, "Samples per clip (auto: about a second: 8192 at 8 kHz, 16384 at 16 or 22.05 kHz, 32768 at 44.1 kHz; "
              "SpecGAN 8192 or 16384, WaveGAN 16384 or more).")
    model_size: int = option(64, "Model size d: the widest layer has 16d channels (paper: 64).", gt=0)
    latent_dim: int = option(100, "Dimension of z ~ U[-1, 1].", gt=0)
    phase_shuffle: int = option(2, "WaveGAN discriminator's phase-shuffle radius (0 = off).", ge=0)
    upsample: Literal["zeros", "nn"] = option("zeros", "Generator upsampling: zeros (transposed convolutions, the "
                                                       "paper) or nn (nearest neighbour + convolution).")
    post_filter: bool = option(False, "WaveGAN: learned 512-tap post-processing filter on the generator's output.")
    conditional: bool | None = option(None, "Class-conditional generator and projection discriminator (auto: on when the "
                                            "data has class labels); --no-conditional for an unconditional model.")
    g_norm: Literal["batch", "none"] = option("none", "SpecGAN generator normalisation (batch: DCGAN's batch norm; "
                                                      "paper: none).")
    g_cond: Literal["input", "film"] = option("input", "SpecGAN: where the label enters the generator: at its input "
                                                       "(input, concatenated to z) or also as a gain and a bias of "
                                                       "every hidden layer (film: conditional batch norm; the "
                                                       "built-in digits' recipe: input).")
    d_norm: Literal["batch", "spectral", "layer", "none"] = option("none", "SpecGAN discriminator normalisation "
                                                                           "(paper: none).")
    augment: str = option("", "DiffAugment for small data, applied to all the discriminator sees: translation, "
                              "timemask, freqmask, comma-separated ('' = off).")
    aux_class: float = option(0.0, "AC-GAN auxiliary classifier (Odena et al. 2017) in the conditional "
                                   "discriminator, this weight: its cross-entropy on real clips in D's loss and on "
                                   "fakes for their intended class in G's (0 = off).", ge=0)
    aux_fake_class: float = option(0.0, "AC-GAN's classifier gets a class for generated clips (K + 1 classes, the "
                                        "semi-supervised discriminator of Salimans et al. 2016), learnt on D's fakes "
                                        "at this weight relative to the real clips' term (0 = off: as measured, "
                                        "within the seed noise, at a higher FD).", ge=0)
    d_view: Literal["linear", "mel", "both"] | None = option(
        None, "SpecGAN: the discriminator reads each spectrogram as it is (linear, the paper), warped to the mel "
                  "scale (the first kHz at about 3 x the rows at 16 kHz), or both, in two stacks of convolutions.",
        auto="both at 16 kHz (a step takes 1.5 x the time; the built-in digits: both, with --d-kernel 3), linear at 8 "
             "kHz, where the first kHz already has 32 rows")
    d_kernel: Literal[3, 5] = option(5, "SpecGAN: the discriminator's square convolution kernel (paper: 5); 3 takes "
                                        "about half the time, which pays for a second view (--d-view both).")
    labels: Literal["folder", "prefix", "none"] | None = option(
        None, "Where a folder's class labels are read: its first-level sub-folders' names (folder), the label_ start "
              "of each file name (prefix, the Free Spoken Digit Dataset's 7_jackson_32.wav) or nowhere (none; "
              "the built-in digits, labelled by their corpus, record none). A scheme asked for is used as it is; a "
              "file it cannot label is an error.",
        auto="sub-folders when every file is in one, else prefixes when every name has one; with both, prefixes when "
             "each file's folder is a later field of its name (AudioMNIST's 01/7_01_32.wav: a folder per speaker), "
             "else sub-folders; names that are identifiers rather than classes are left unlabelled, with a warning")
    lead: float | None = option(None, "Silence put before every clip in the model's view of the data and cut off "
                                      "every clip it generates, as a fraction of the clip (0.2: about 0.2 s of a "
                                      "one-second clip), so that a word that starts its recording is not drawn at "
                                      "the edge of the model's grid (0 = none, the papers').", ge=0, lt=0.5,
                                auto="0.2 when the clips are trimmed to the word (half of them loud within their "
                                     "first 5 %), else 0; never more than the quiet end of all but 1 in 20 clips")
    candidates: int = option(1, "Clips the generator makes for each clip kept: the one the discriminator's "
                                "AC-GAN classifier (--aux-class) most believes to be of its class is kept "
                                "(1 = off; labelled data only).", ge=1, le=64, resumable=True)
    griffin_lim_iters: int = option(16, "SpecGAN: Griffin-Lim iterations when turning spectrograms into audio.", gt=0,
                                    resumable=True)
    eval_samples: int = option(500, "Clips scored by the reference classifier at evaluations (0 = no evaluation; "
                                    "needs labelled data).", ge=0, resumable=True)

    def __post_init__(self) -> None:
        parse_policy(self.augment)  # an unknown policy is a one-line error before anything is loaded
        allowed = lengths_of(self.model)
        if self.length is not None and self.length not in allowed:
            raise GenkitError(f"--model {self.model} makes clips of {', '.join(map(str, allowed))} samples, "
                              f"not --length {self.length}", exit_code=2)


POLICIES = ("translation", "timemask", "freqmask")  # augment.py


def parse_policy(policy: str) -> tuple[str, ...]:
    """``--augment`` text -> policy names in order; an unknown name is a one-line usage error."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    for name in names:
        if name not in POLICIES:
            raise GenkitError(f"--augment: {name!r} is not an audio policy ({', '.join(POLICIES)})", exit_code=2)
    return names


# The clip lengths each model makes; defined here, where no torch is imported, and used by specgan.py / wavegan.py.
SPECGAN_LENGTHS = (8192, 16384)  # hop = length / 128: 64 or 128 samples, 75 % or 50 % overlap of the 256-sample window
WAVEGAN_LENGTHS = (16384, 32768, 65536)


def lengths_of(model: str) -> tuple[int, ...]:
    return WAVEGAN_LENGTHS if model == "wavegan" else SPECGAN_LENGTHS


def default_length(model: str, rate: int) -> int:
    """About one second of audio: the power of two nearest ``rate`` samples that ``model`` can make."""
    return min(lengths_of(model), key=lambda n: (abs(math.log2(n / rate)), n))


def auto_rate_cap(model: str) -> int | None:
    """The highest rate ``--sample-rate auto`` gives ``model``. SpecGAN's 128 x 128 grid holds at most 16,384
    samples: 1.02 s at 16 kHz (the paper's rate), but 0.74 s at 22.05 kHz and 0.37 s at 44.1 kHz, which cuts most
    spoken words (the Free Spoken Digit Dataset's median clip is 0.50 s), so data above 16 kHz is resampled to
    16 kHz. WaveGAN makes up to 65,536 samples and keeps the data's own rate."""
    return 16000 if model == "specgan" else None


# The CPU recipe's small-data additions, which the papers' presets switch off again.
NOT_IN_THE_PAPER = {"augment": "", "aux_class": 0.0, "lecam": 0.0, "mismatch": 0.0, "standing_stats": 0,
                    "candidates": 1, "lead": 0.0, "ema": 0.0, "d_view": "linear", "d_kernel": 5, "g_cond": "input"}


class AudioDomain(Domain):
    name = "audio"
    summary = "WaveGAN / SpecGAN at 8-44.1 kHz (default: spoken digits synthesised offline)"
    paper = "Donahue, McAuley & Puckette, Adversarial Audio Synthesis, ICLR 2019"
    sample_ext = ".wav"
    Options = AudioOptions
    data_names = ("espeak-digits",)
    evaluates = True
    # Weights files before genkit 0.2 held SpecGAN's statistics; they are the domain's state now.
    legacy_weight_keys = ("spec_mean", "spec_std")
    # Runs before sample rates were an option were at 16 kHz.
    # Runs before --lead put each clip at the start of the model's grid.
    # Runs before --d-view had the linear view.
    legacy_defaults = {"sample_rate": 16000, "aux_class": 0.0, "candidates": 1, "lead": 0.0, "d_view": "linear",
                       "d_kernel": 5, "g_cond": "input"}
    best_metric = ("refnet_fd", "min")  # checkpoints/best names the checkpoint with the lowest refnet FD
    vector_condition = True  # a TARGET of --condition SOURCE (docs/cross-modal.md): with data.cond_dim > 0 the models
    # take a (B, cond_dim) embedding (concatenated to z in G, a projection term in D); and a SOURCE (condition_encoder)
    # CPU-sized default (docs/audio.md has the measured alternatives): SpecGAN at the data's own rate, d = 8,
    # nearest-neighbour upsampling, DCGAN's batch norm in G and spectral norm in D (Miyato et al. 2018), the hinge
    # loss, Adam 2e-4 / (0.5, 0.999), batch 32, one D step per G step, class-conditional on labelled data. Samples
    # are drawn with standing batch-norm statistics (32 batches; BigGAN's): the running averages of training made
    # the same FSDD weights score FD 277 and 6 classes, standing statistics FD 125 and 8 classes. For small data
    # sets (genkit 0.3): DiffAugment on all D sees (Zhao et al. 2020), AC-GAN's auxiliary classifier (weight 1) and
    # the LeCam regulariser (0.3, Tseng et al. 2021): together they made the generator follow its label in 47-69 %
    # of clips instead of 29-42 % and raised IS / real on both spoken-digit sets at every seed measured, where each
    # alone had moved one data set only (docs/audio.md). 1,000 steps: on real speech one seed of three collapsed by
    # 1,500 (the discriminator overfits a few thousand clips) and eSpeak's gain there was within the seed noise.
    # Samples keep the best of 16 candidates by D's AC-GAN classifier (--candidates, candidates.py): on real speech
    # the label followed rose from 65-72 % to 78-83 % and the classes from 6-8 to 9 at four runs, FD within 6 %; on
    # the eSpeak digits, once over-range clips were scaled rather than clipped (specgan.invert), from 62 % to 75 %,
    # FD 202 -> 193 (docs/audio.md). Training is unchanged.
    # The matching-aware discriminator (--mismatch 0.5, Reed et al. 2016, the engine's): half of D's fake side is real
    # clips under another digit's label. At nine paired seeds (FSDD 1-5, eSpeak 1-4) the label was followed more at
    # all nine (0.86 against 0.78 on FSDD), IS / real rose at all nine, a digit or two more was covered at six and none
    # fewer; FD moved either way, worse on average (FSDD 287 against 207) (docs/audio.md). Its mismatched real clips are
    # scored from the features of D's pass over the real batch (ProjectionCritic.relabel), not in a pass of their own.
    # SpecGAN's 4-D weights and batches in channels-last memory order (--channels-last): the same arithmetic, and on
    # the CPU's oneDNN convolutions a training step takes 0.70 x the time (docs/audio.md). WaveGAN has no 4-D weights.
    # Samples come from an exponential moving average of G's weights (--ema 0.995, a horizon of about 200 steps; Yazici
    # et al. 2019, as StyleGAN and BigGAN), with standing statistics of the averaged weights: over eight paired runs
    # (FSDD and eSpeak, training unchanged) FD was lower at seven, IS / real and the label followed higher at five and
    # a little lower at three, no digit lost; the true FSDD default's FD went from 114 to 82 (docs/audio.md).
    # The lead is the option's auto: 0.2 for a folder of recordings trimmed to the word (real speech: "one" right in
    # 48-50 of 50 clips instead of 27-42), none for clips whose words start later, which it would only cut.
    # At 16 kHz D reads each spectrogram twice (--d-view auto: both): as it is and warped to the mel scale, each in its
    # own stack of convolutions, one head over both. On the linear axis the first kHz is 16 of 128 rows at 16 kHz, and
    # the generator learnt to satisfy D's classifier there without the digit; with the mel view FSDD resampled to 16
    # kHz went from 7 to 10 digits (FD 174 -> 109). At 8 kHz (32 rows for the first kHz) it was about even at three
    # runs, FD worse at two, so auto gives 8 kHz the linear view; a step takes 1.5 x the time (docs/audio.md, The
    # discriminator's mel view).
    # The label also sets a gain and a bias of each of G's hidden layers (--g-cond film, conditional batch norm): on
    # real speech better at four seeds of four (means: IS / real 1.35 -> 1.40, FD 153 -> 120, digits 9.75 -> 10, FSDD's
    # "nine" right far more often); the built-in digits keep the label at the input (data_recipes, below).
    recipe = {"model": "specgan", "steps": 1000, "batch_size": 32, "loss": "hinge", "n_critic": 1, "lr_g": 2e-4,
              "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "model_size": 8, "upsample": "nn", "g_norm": "batch",
              "d_norm": "spectral", "checkpoint_every": 500, "sample_every": 250, "log_every": 50, "eval_every": 500,
              "standing_stats": 32, "augment": "translation,timemask,freqmask", "aux_class": 1.0, "lecam": 0.3,
              "mismatch": 0.5, "candidates": 16, "channels_last": True, "ema": 0.995, "g_cond": "film"}
    presets = {
        # The authors' WaveGAN exactly (train_wavegan.py): d = 64, WGAN-GP (lambda 10 is wgan-gp's default),
        # 5 critic updates per generator update, Adam 1e-4 / (0.5, 0.9), batch 64. A GPU run of days.
        "paper": {"model": "wavegan", "length": 16384, "model_size": 64, "latent_dim": 100, "phase_shuffle": 2,
                  "conditional": False,
                  "upsample": "zeros", "post_filter": False, "loss": "wgan-gp", "n_critic": 5, "lr_g": 1e-4,
                  "lr_d": 1e-4, "beta1": 0.5, "beta2": 0.9, "batch_size": 64, "steps": 100000,
                  "g_norm": "none", "d_norm": "none", "checkpoint_every": 2000, "sample_every": 2000,
                  "log_every": 100, "eval_every": 2000, "channels_last": False, **NOT_IN_THE_PAPER},
        # A smoke run of the default recipe, as the image and text domains' quick presets: the data read, the model
        # built, samples and one evaluation written, not yet speech (FSDD: 178 s at --threads 1 beside another run).
        # No EMA: after 200 steps an average still holds the early weights (FSDD, EMA 0.98: IS / real 0.63, FD 372, 5
        # digits, against 0.75, 245, 6 for the weights as they are; docs/audio.md).
        "quick": {"steps": 200, "sample_every": 100, "checkpoint_every": 100, "eval_every": 0, "log_every": 20,
                  "ema": 0.0},
        # The authors' SpecGAN: the same training on 128 x 128 spectrograms.
        "specgan-paper": {"model": "specgan", "length": 16384, "model_size": 64, "latent_dim": 100, "conditional": False,
                          "loss": "wgan-gp", "n_critic": 5, "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.5,
                          "beta2": 0.9, "batch_size": 64, "steps": 100000, "g_norm": "none", "d_norm": "none",
                          "checkpoint_every": 2000, "sample_every": 2000, "log_every": 100, "eval_every": 2000,
                          **NOT_IN_THE_PAPER},
    }

    # -- data ---------------------------------------------------------------------------------------
    def load_data(self, spec: str, options: AudioOptions, *, cache_dir: Path) -> Data:
        import torch
        from torch.utils.data import TensorDataset

        from . import data as audata

        rate, length = options.sample_rate, options.length
        if spec == "espeak-digits":
            rate = rate or audata.SAMPLE_RATE
            length = length or default_length(options.model, rate)
            if options.labels in ("folder", "prefix"):
                raise GenkitError(f"--labels {options.labels}: for a folder's file names; the built-in digits are "
                                  "labelled", exit_code=2)
            x, y, names, source = audata.espeak_digits(cache_dir, length, rate)
            scheme = "none"  # no label is read from a name: the corpus has its own (config.toml records "none")
        else:
            path = Path(spec).expanduser()
            if not path.exists():
                raise GenkitError(f"--data {spec}: no such folder (built-in: {', '.join(self.data_names)})")
            if not path.is_dir():
                raise GenkitError(f"--data {spec}: expected a folder of WAV/FLAC/OGG files")
            files = audata.audio_files(path)  # listed once, for the label scheme and the decoding
            scheme = audata.label_scheme(path, files, options.labels)
            x, y, names, source, rate = audata.load_folder(path, length, rate, lambda r: default_length(options.model, r),
                                                           {"model": options.model}, auto_rate_cap(options.model),
                                                           labels=scheme, files=files)
            length = x.shape[-1]
        labelled = y is not None and len(names) >= 2
        guessed = spec not in self.data_names and options.labels is None  # a folder's labels, read by --labels auto
        if guessed and labelled and not options.conditional and not labels_are_classes(y.tolist(), names, str(spec)):
            y, names, labelled, scheme = None, [], False, "none"  # identifiers, not classes (the warning says so)
            source = source.replace(", labels from", ", unlabelled: identifiers in")
        conditional = labelled if options.conditional is None else options.conditional
        if conditional and not labelled:
            raise GenkitError(f"--data {spec}: --conditional needs class labels (sub-folders or label_ file-name prefixes)")
        labels = y if y is not None else torch.zeros(len(x), dtype=torch.int64)
        data = Data(train=TensorDataset(x, labels), conditional=conditional,
                    num_classes=len(names) if conditional else 0, class_names=names, source=source,
                    extra={"labelled": labelled, "sample_rate": rate, "length": length, "labels": scheme})
        return _with_transform(data, x, options.model, options.lead)

    def load_examples(self, values, labels, class_names, options: AudioOptions, *, cache_dir: Path) -> Data:
        """The TARGET's examples of a ``--pairs`` manifest: ``values`` are audio files (WAV, FLAC, OGG; absolute
        paths, or as written when no such file exists), example i of class ``labels[i]`` of ``class_names``.
        "auto" rate: the files' commonest (an unsupported one goes to the next supported rate up, as for
        ``--data FOLDER``); others are resampled to it, and every clip is cut or padded to the run's length. An
        unreadable file is one error line naming it."""
        import torch
        from torch.utils.data import TensorDataset

        from . import data as audata

        if options.conditional is False:
            raise GenkitError("--pairs: a manifest's clips are conditioned on their row's key; drop --no-conditional",
                              exit_code=2)
        read = []
        for value in values:
            path = Path(str(value)).expanduser()
            if not path.is_file():
                raise GenkitError(f"{value}: no such audio file")
            try:
                wave, rate = audata.read_audio(path)
            except Exception as exc:  # soundfile's LibsndfileError, RuntimeError, TypeError... for a bad file
                raise GenkitError(f"{path}: not readable audio ({exc.__class__.__name__})") from None
            if wave.numel() == 0 or not torch.isfinite(wave).all():
                raise GenkitError(f"{path}: not readable audio (no samples, or non-finite ones)")
            read.append((wave, rate))
        rate = options.sample_rate or audata.data_rate(Path("--pairs"), [r for _, r in read],
                                                       auto_rate_cap(options.model))
        length = options.length or default_length(options.model, rate)
        x = audata.to_clips(read, rate, length, name="--pairs")
        y = torch.as_tensor(labels, dtype=torch.int64)
        data = Data(train=TensorDataset(x, y), conditional=True, num_classes=len(class_names),
                    class_names=list(class_names), source=f"{len(x)} listed clips at {rate} Hz",
                    extra={"labelled": True, "sample_rate": rate, "length": length})
        return _with_transform(data, x, options.model, options.lead)

    # Cross-modal runs (--condition SOURCE): the discriminator learns the condition encoder from scratch besides the
    # audio, and at 1,000 steps the generator barely follows the condition (eSpeak digits: text -> audio 0.10,
    # image -> audio 0.13 conditional accuracy); at 3,000 it does (0.36 and 0.26; docs/cross-modal.md). The
    # embedding joins z at gain 1: the engine's default gain of 3 (measured on image targets) made image -> audio
    # worse (0.30 against 0.34, 4 classes against 7) and text -> audio no better (0.37 against 0.36, FD 226
    # against 159; docs/cross-modal.md).
    # It keeps the recipe it was measured with: no augmentation, no LeCam (AC-GAN needs class labels), no EMA.
    crossmodal_recipe = {"steps": 3000, "eval_every": 1000, "checkpoint_every": 1000, "condition_gain": 1.0,
                         "augment": "", "aux_class": 0.0, "lecam": 0.0, "mismatch": 0.0,
                         "candidates": 1, "lead": 0.0, "ema": 0.0, "d_view": "linear", "d_kernel": 5, "g_cond": "input"}

    # The built-in digits (2,000 clips of many synthetic voices) train for 1,500 steps: from step 1,000 to 1,500 the
    # label was followed more at 5 of 6 GPU runs and all 5 CPU runs and FD fell at most (GPU means: FD 180 -> 130, IS / real
    # 0.74 -> 0.83), the digits covered about the same; on real speech (1,500 clips of three speakers) the
    # discriminator overfits and most runs lost (docs/audio.md).
    # A class of its own for generated clips in their AC-GAN classifier (--aux-fake-class 0.25) was measured and
    # left off: over seven seeds it covered 8.6 digits against 8.4 and followed the label in 0.77 of clips against
    # 0.76, within the seed noise, at an FD of 151 against 125 (docs/audio.md).
    # Its clips already start at a random offset of up to 0.15 s, so it gets no --lead.
    # Both views (--d-view both) with 3 x 3 kernels in D (--d-kernel 3): at 5 x 5 both views took 11 minutes on 2
    # cores; at 3 x 3 a step costs what the linear view's 5 x 5 did (D's convolutions at 0.52 x the time). Against
    # the linear view, IS / real, FD and the label followed were all better at three paired runs of four (at the
    # fourth FD better, IS lower; means over three seeds: 0.88 -> 0.99, FD 168 -> 123, followed 0.79 -> 0.87), and
    # the true default went from 0.67 x, FD 191, 8 digits to 1.07 x, FD 85, 9 digits in 7 min 42 s (docs/audio.md,
    # Two views at 3 x 3).
    # DiffAugment without its time mask for the built-in digits (2026-12-07): a masked span of up to 1/8 of the clip
    # can blank the short onset that tells "two" from "three" and "four", and AC-GAN's terms learn through it. At
    # seeds 0-3: 9, 9, 10, 9 digits against 8, 9, 8, 9; the label followed 0.89 against 0.83 on average, IS / real
    # 1.05 against 0.95, FD 122 against 134. On FSDD it was even (one seed a little better, one a little worse), so
    # folders keep the mask (docs/audio.md, No time mask for the built-in digits).
    # The label at G's input only (--g-cond input): gains and biases of it in every layer were even on the built-in
    # digits (the same digits at five seeds, IS / real, FD and the label followed a little lower on average), where
    # they won on real speech (docs/audio.md, Gains and biases of the label in every layer of the generator).
    # Evaluated midway and at the end (--eval-every 750), as a folder's 1,000 steps are: a third evaluation, at step
    # 500 (500 clips of 16 candidates each, about 21 s, 3.5 % of the 10-minute budget), told little (FD 300-400
    # there) (docs/audio.md, A fresh machine's minute).
    data_recipes = {"espeak-digits": {"steps": 1500, "eval_every": 750, "lead": 0.0, "d_view": "both", "d_kernel": 3,
                                      "augment": "translation,freqmask", "g_cond": "input"}}

    def recipe_for(self, data, given):
        """The recipe of a named data set (the built-in digits' also when ``--data`` is not given), and a longer one
        for a cross-modal run (``--condition SOURCE``)."""
        recipe = super().recipe_for(data if data is not None else self.data_names[0], given)
        if given.get("condition"):
            recipe.update(self.crossmodal_recipe)
        if given.get("model") == "wavegan":  # 1-D convolutions: no memory order to change, no spectrogram views
            recipe.update(channels_last=False, d_view="linear", d_kernel=5, g_cond="input")
        return recipe

    def resolve_options(self, options: AudioOptions, data: Data) -> AudioOptions:
        """``sample_rate``, ``length``, ``conditional``, ``lead``, ``d_view`` and a folder's ``labels`` as loaded
        (config.toml records 8000, 8192, true, 0.2, "linear" and "prefix" for the Free Spoken Digit Dataset)."""
        rate = data.extra["sample_rate"]
        view = options.d_view or ("both" if options.model == "specgan" and rate >= 16000 else "linear")
        return dataclasses.replace(options, sample_rate=rate, length=data.extra["length"],
                                   conditional=data.conditional, lead=data.extra["lead"], d_view=view,
                                   labels=data.extra.get("labels"))

    def upgrade_options(self, saved, data_meta):
        """``legacy_defaults``, and a folder's ``labels`` as the run's data.json says they were read: before
        ``--labels``, sub-folders won wherever every file was in one (AudioMNIST's speaker folders too)."""
        upgraded = super().upgrade_options(saved, data_meta)
        if "labels" not in saved:
            source = str(data_meta.get("source", ""))
            for scheme, said in (("folder", ", labels from sub-folders"), ("prefix", ", labels from file-name prefixes")):
                if said in source:
                    upgraded["labels"] = scheme
        return upgraded

    # -- models -------------------------------------------------------------------------------------
    def build_models(self, options, data):
        # a one-hot label, or (--condition SOURCE: data.cond_dim > 0) another domain's embedding of a paired example
        num_classes = data.num_classes if data.conditional and not data.cond_dim else 0
        if options.model == "specgan":
            from .specgan import SpecGANConfig, SpecGANDiscriminator, SpecGANGenerator

            if "spec_mean" not in data.state:
                raise GenkitError("the SpecGAN normalisation statistics are missing from the run's state")
            cfg = SpecGANConfig(d=options.model_size, latent_dim=options.latent_dim, num_classes=num_classes,
                                upsample=options.upsample, g_norm=options.g_norm, g_cond=options.g_cond,
                                d_norm=options.d_norm,
                                augment=parse_policy(options.augment), aux_class=options.aux_class,
                                aux_fake_class=options.aux_fake_class, cond_dim=data.cond_dim,
                                d_view=options.d_view or "linear", d_kernel=options.d_kernel,
                                sample_rate=options.sample_rate or 16000)
            G = SpecGANGenerator(cfg)
            G.set_statistics(data.state["spec_mean"], data.state["spec_std"])
            return G, SpecGANDiscriminator(cfg)
        from .wavegan import WaveGANConfig, WaveGANDiscriminator, WaveGANGenerator

        cfg = WaveGANConfig(length=options.length, d=options.model_size, latent_dim=options.latent_dim,
                            upsample=options.upsample, phase_shuffle=options.phase_shuffle,
                            post_filter=options.post_filter, num_classes=num_classes,
                            augment=parse_policy(options.augment), aux_class=options.aux_class,
                            aux_fake_class=options.aux_fake_class, cond_dim=data.cond_dim)
        return WaveGANGenerator(cfg), WaveGANDiscriminator(cfg)

    def sample_latent(self, n, options, *, rng, device):
        """z ~ U[-1, 1]^latent_dim: the paper's prior, for training and for every sample written."""
        import torch

        return torch.rand(n, options.latent_dim, generator=rng, device=device).mul_(2.0).sub_(1.0)

    def sample_shape(self, options, data):
        return (1, options.length)

    # -- the adversarial step: AC-GAN's auxiliary classifier (--aux-class) ----------------------------------
    def fake(self, generator, z, cond, ctx):
        """G(z, cond); with ``--aux-class``, first names the update's real batch to the discriminator, whose
        forward call on it then adds the classifier's cross-entropy to D's loss (wavegan.ProjectionCritic); in D's
        update (drawn without gradients) also the fakes, which a classifier with ``--aux-fake-class`` learns as
        generated."""
        import torch

        mark = getattr(ctx.discriminator, "mark_real", None)
        if mark is not None and getattr(ctx.discriminator, "aux_classifier", None) is not None:
            mark(ctx.real)
        out = generator(z, cond)
        mark_fake = getattr(ctx.discriminator, "mark_fake", None)
        if mark_fake is not None and not torch.is_grad_enabled():  # D's update (no_grad): its fakes, for K + 1 classes
            mark_fake(out)
        return out

    def generator_loss(self, z, cond, ctx):
        """With ``--aux-class W`` (conditional): the adversarial loss plus W x the cross-entropy of D's auxiliary
        classifier on the fakes for the classes they were generated for (AC-GAN, Odena et al. 2017); otherwise
        None (the engine's own generator loss)."""
        D = ctx.discriminator
        if cond is None or getattr(D, "aux_classifier", None) is None:
            return None
        import torch.nn.functional as F

        real_logits = D(ctx.real, ctx.cond).float() if ctx.loss.uses_real_in_generator else None
        d_fake = D(self.fake(ctx.generator, z, cond, ctx), cond).float()
        return ctx.loss.generator(d_fake, real_logits) + D.aux_weight * F.cross_entropy(D.class_logits.float(),
                                                                                           cond.long())

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, ctx):
        """refnet metrics (see metrics.py) of ``eval_samples`` clips and their loudness against real clips
        (``rms_ratio``); {} when off or the data has no labels."""
        from genkit.refnet import train_examples
        from genkit.sampling import EVAL_SEED, generate

        from . import metrics

        n, data = ctx.options.eval_samples, ctx.data
        if n <= 0 or not data.extra.get("labelled") or data.train is None or len(data.train) < 20:
            return {}  # off, unlabelled, or too few clips to hold some out for the classifier
        x, y = data.train.tensors
        net, acc, test_idx = metrics.reference_classifier(x, y, len(data.class_names), data.source,
                                                          ctx.cache_dir, sample_rate=ctx.options.sample_rate)
        fakes, conds = generate(self, ctx.generator, n, ctx.options, data, device=ctx.device, seed=EVAL_SEED, chunk=100)
        train = x[train_examples(len(x), test_idx)]
        scores = metrics.score(net, acc, x[test_idx], fakes.float(), len(data.class_names), train=train,
                               fake_cond=conds if data.conditional else None)
        return {**scores, "rms_ratio": metrics.rms_ratio(fakes, x[test_idx])}

    # -- as the source of a cross-modal condition (genkit run TARGET --condition audio) -------------
    def condition_encoder(self, options, data, dim):
        """A small CNN over the clip's log spectrogram (SpecGAN's normalised 128 x 128 one, or computed from the
        waveform for WaveGAN's data) to a ``dim``-vector; genkit normalises it and trains it with TARGET's D."""
        from .specgan import ConditionEncoder

        return ConditionEncoder(dim)

    def condition_example(self, value, options, data):
        """``genkit sample RUN --condition WORD.wav``: the file at the run's source rate and length, as int16."""
        from .data import read_audio, to_clips

        path = Path(value).expanduser()
        if not path.is_file():
            raise GenkitError(f"--condition {value}: no such audio file")
        try:
            x, rate = read_audio(path)
        except Exception as exc:
            raise GenkitError(f"--condition {value}: not readable audio ({exc.__class__.__name__})") from None
        return to_clips([(x, rate)], options.sample_rate, options.length)

    # -- output -------------------------------------------------------------------------------------
    def sampler_uses_discriminator(self, options):
        return options.candidates > 1 and options.aux_class > 0

    def sampler(self, generator, discriminator, options):
        """With ``--candidates K`` (and AC-GAN's classifier): the best of K candidates per clip (candidates.py)."""
        if discriminator is None or getattr(discriminator, "aux_classifier", None) is None or \
                not self.sampler_uses_discriminator(options):
            return generator  # also a cross-modal run's, whose discriminator has no class head
        from .candidates import CandidatePicker

        return CandidatePicker(generator, discriminator, options.candidates)

    def generate(self, generator, z, cond, options):
        out = generator(z, cond)
        if options.model == "specgan":
            from .specgan import invert

            # The statistics were copied into the generator from the run's state when it was built.
            out = invert(out, generator.spec_mean, generator.spec_std, n_iter=options.griffin_lim_iters,
                         length=options.length)
        return shift(out, -lead_samples(options.lead, options.length))

    def snapshot_size(self, options):
        return 20 if options.conditional else 16

    def _grid_cols(self, n: int, data: Data) -> int:
        return min(n, data.num_classes) if data.conditional and data.num_classes else 4

    def write_snapshot(self, samples, cond, path, options, data):
        from .io import spectrogram_grid, write_wav

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        files = [write_wav(folder / f"{i:02d}{_label(cond, i, data)}.wav", w, options.sample_rate)
                 for i, w in enumerate(samples)]
        files.append(spectrogram_grid(samples, folder.with_name(folder.name + ".png"), self._grid_cols(len(samples), data)))
        return files

    def write_samples(self, samples, cond, out_dir, options, data):
        from .io import spectrogram_grid, write_wav

        files = [write_wav(out_dir / f"sample-{i:05d}{_label(cond, i, data)}.wav", w, options.sample_rate)
                 for i, w in enumerate(samples)]
        files.append(spectrogram_grid(samples, out_dir / "spectrograms.png", self._grid_cols(len(samples), data)))
        return files


def _int16_to_float(batch):
    return batch.float().div_(32768.0)


def _spectrogram_transform(mean, std):
    """int16 clips -> SpecGAN's normalised log-magnitude spectrograms, on the batch's device."""

    def to_spectrogram(batch):
        from . import specgan

        return specgan.normalise(specgan.spectrogram(_int16_to_float(batch)), mean.to(batch.device),
                                 std.to(batch.device))

    return to_spectrogram


def _label(cond, i: int, data: Data) -> str:
    if cond is None or not data.class_names:
        return ""
    return f"-{data.class_names[int(cond[i])]}"


@hookimpl
def genkit_register_domains(register):
    register(AudioDomain())


def lead_samples(lead: float, length: int) -> int:
    """``--lead`` (a fraction of the clip) as samples of a ``length``-sample clip."""
    return round(lead * length)


def shift(x, n: int):
    """(..., T) clips moved ``n`` samples later (``n`` < 0: earlier), silence (zeros) coming in, the far end cut."""
    import torch

    if n == 0:
        return x
    pad = torch.zeros_like(x[..., :abs(n)])
    return torch.cat([pad, x[..., :-n]], dim=-1) if n > 0 else torch.cat([x[..., -n:], pad], dim=-1)


def _with_transform(data: Data, x, model: str, lead: float | None) -> Data:
    """The training transform for ``x`` (int16 clips): each clip moved ``lead`` of its length later (``--lead``; None:
    ``data.auto_lead`` of the clips, recorded in ``data.extra["lead"]`` either way; the data itself is left as it is,
    so that evaluations compare generated clips, whose lead is cut off, with the clips as recorded), then SpecGAN's
    normalised spectrograms, whose per-frequency-bin moments of the training set's log-magnitudes go into the run's
    state, or WaveGAN's floats."""
    if lead is None:
        from .data import auto_lead

        lead = auto_lead(x, data.extra["sample_rate"])
    data.extra["lead"] = lead
    lead = lead_samples(lead, data.extra["length"])
    if model == "wavegan":
        data.transform = lambda batch: _int16_to_float(shift(batch, lead))  # shift by 0 returns the batch itself
        return data
    import torch

    from . import specgan

    stats = []
    with torch.no_grad():
        for chunk in x.split(256):
            stats.append(specgan.spectrogram(shift(chunk, lead).float() / 32768.0)[:, 0])
    logmag = torch.cat(stats)  # (N, 128, 128)
    data.state["spec_mean"] = logmag.mean(dim=(0, 2))
    data.state["spec_std"] = logmag.transpose(0, 1).reshape(128, -1).std(dim=1).clamp_min(1e-3)
    transform = _spectrogram_transform(data.state["spec_mean"], data.state["spec_std"])
    data.transform = lambda batch: transform(shift(batch, lead))
    return data
