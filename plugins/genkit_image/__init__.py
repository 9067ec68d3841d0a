"""genkit's image domain: DCGAN (Radford et al., ICLR 2016) for 28/32/64-pixel images, 1 or 3 channels,
unconditional or class-conditional. The seed document's MNIST example, done right.

This module is imported when genkit loads its plugins, so it imports no torch; the model and data
modules are imported by the methods that need them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from genkit import Data, Domain, GenkitError, hookimpl, labels_are_classes, option

NATIVE_SIZE = {"mnist5k": 28, "mnist": 28, "fashion-mnist": 28, "cifar10": 32}
POLICIES = ("color", "translation", "cutout")  # DiffAugment's (augment.py)


def parse_policy(policy: str) -> tuple[str, ...]:
    """``--augment`` text -> policy names; an unknown name is a one-line usage error."""
    parts = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in parts if p not in POLICIES]
    if unknown:
        raise GenkitError(f"--augment: unknown policy {unknown[0]!r} (choose from {', '.join(POLICIES)}, "
                          "comma-separated)", exit_code=2)
    return parts


@dataclass(frozen=True)
class ImageOptions:
    size: Literal[28, 32, 64] | None = option(None, "Image side in pixels.",
                                              auto="the data's: 28 for MNIST, 32 for CIFAR-10, else 64")
    channels: Literal[1, 3] | None = option(None, "1 (grayscale) or 3 (RGB).", auto="as the data")
    conditional: bool | None = option(None, "Class-conditional generator and projection discriminator (labels from the "
                                            "data); --no-conditional for an unconditional model.",
                                      auto="on when the data has class labels")
    latent_dim: int = option(100, "Dimension of z ~ N(0, I).", gt=0)
    g_width: int = option(32, "Generator width (ngf): channels of its last hidden layer.", gt=0)
    d_width: int = option(32, "Discriminator width (ndf): channels of its first layer.", gt=0)
    d_norm: Literal["batch", "spectral", "layer", "none"] = option("batch", "Discriminator normalisation.")
    augment: str = option("", "DiffAugment policies for small data, comma-separated: color, translation, cutout "
                              "('' = off).")
    eval_samples: int = option(1000, "Samples scored by the reference classifier at evaluations (0 = no evaluation).",
                               ge=0, resumable=True)

    def __post_init__(self) -> None:
        parse_policy(self.augment)  # an unknown policy is a one-line error before anything is loaded


class ImageDomain(Domain):
    name = "image"
    summary = "DCGAN on 28/32/64-pixel images (default: handwritten digits, offline)"
    paper = "Radford, Metz & Chintala, Unsupervised Representation Learning with DCGANs, ICLR 2016"
    sample_ext = ".png"
    Options = ImageOptions
    data_names = ("mnist5k", "mnist", "fashion-mnist", "cifar10")  # the first is the default, shipped in genkit
    evaluates = True
    best_metric = ("refnet_fd", "min")  # checkpoints/best names the checkpoint with the lowest refnet FD
    vector_condition = True  # a TARGET of --condition SOURCE (docs/cross-modal.md): models take a (B, dim) condition,
    # and a SOURCE (condition_encoder, condition_example); load_examples reads a --pairs manifest's images
    # Radford et al.: Adam, lr 2e-4, beta1 0.5, batch 128. 7500 steps of batch 64 (96 epochs of the 5k MNIST
    # subset), class-conditional since MNIST has labels: measured best refnet FD of 2,500..10,000 steps, and
    # 2-4 minutes on 2 CPU cores (docs/image.md has the table of what was measured and rejected).
    recipe = {"steps": 7500, "batch_size": 64, "loss": "ns", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5,
              "beta2": 0.999, "checkpoint_every": 2500, "sample_every": 500, "log_every": 50, "eval_every": 2500}
    presets = {
        # The paper's own settings: batch 128 and the same Adam; a GPU-sized run.
        "paper": {"batch_size": 128, "steps": 20000, "g_width": 64, "d_width": 64},
        # A minute-long smoke run: enough to see digit-like strokes.
        "quick": {"steps": 400, "sample_every": 100, "checkpoint_every": 200},
    }

    # -- settings -----------------------------------------------------------------------------------
    def resolve_options(self, options: ImageOptions, data: Data) -> ImageOptions:
        """``size``, ``channels`` and ``conditional`` as loaded (config.toml records 28, 1 and true for MNIST)."""
        return dataclasses.replace(options, size=data.extra["size"], channels=data.extra["channels"],
                                   conditional=data.conditional)

    def upgrade_options(self, saved: dict[str, Any], data_meta: Mapping[str, Any]) -> dict[str, Any]:
        """Configs before genkit 0.2 said ``size = 0`` / ``channels = 0`` for "the data's"; data.json had the values."""
        saved = super().upgrade_options(saved, data_meta)
        extra = data_meta.get("extra", {})
        for key in ("size", "channels"):
            if saved.get(key) == 0:
                if key not in extra:
                    raise GenkitError(f"config says {key} = 0 (the data's) and data.json does not say which")
                saved[key] = int(extra[key])
        return saved

    # -- data ---------------------------------------------------------------------------------------
    def load_data(self, spec: str, options: ImageOptions, *, cache_dir: Path) -> Data:
        import torch
        from torch.utils.data import TensorDataset

        from . import data as imdata

        size, channels = options.size, options.channels
        from_names = False  # labels read from sub-folder names, not given with the data
        if spec == "mnist5k":
            x, y, names, source = imdata.mnist5k()
        elif spec in imdata.TORCHVISION:
            x, y, names, source = imdata.load_torchvision(spec, cache_dir)
        else:
            path = Path(spec).expanduser()
            if not path.exists():
                raise GenkitError(f"--data {spec}: no such file or folder (built-in names: mnist5k, "
                                  f"{', '.join(imdata.TORCHVISION)})")
            if path.is_dir():
                x, y, names, source = imdata.load_folder(path, size or 64, channels or 3)
                from_names = True
            elif path.suffix.lower() == ".npz":
                x, y, names, source = imdata.load_npz(path)
            else:
                raise GenkitError(f"--data {spec}: expected a folder of images, an .npz file or a dataset name")
        if not size:
            native = x.shape[-1] if x.shape[-1] == x.shape[-2] else 0
            size = NATIVE_SIZE.get(spec, native if native in (28, 32, 64) else 64)
        channels = channels or int(x.shape[1] if x.shape[1] in (1, 3) else 3)
        x = imdata.fit(x, size, channels)
        if len(x) == 0:
            raise GenkitError(f"--data {spec}: no images")
        labelled = y is not None and len(names) >= 2
        if from_names and labelled and not options.conditional and not labels_are_classes(y.tolist(), names, str(spec)):
            y, names, labelled = None, [], False  # identifiers, not classes (the warning says so)
            source = re.sub(r", \d+ classes from", ", unlabelled: identifiers in", source)
        conditional = labelled if options.conditional is None else options.conditional
        if conditional and not labelled:
            raise GenkitError(f"--data {spec}: --conditional needs class labels (sub-folders, or labels in the .npz)")
        labels = y if y is not None else torch.zeros(len(x), dtype=torch.int64)
        return Data(train=TensorDataset(x, labels), conditional=conditional,
                    num_classes=len(names) if conditional else 0, class_names=names,
                    transform=_to_float, source=source,
                    extra={"size": size, "channels": channels, "labels": y})

    def load_examples(self, values, labels, class_names, options: ImageOptions, *, cache_dir: Path) -> Data:
        """The TARGET's examples of a ``--pairs`` manifest: ``values`` are image files (absolute paths, or as
        written when no such file exists), example i of class ``labels[i]`` (an int64 tensor) of
        ``class_names``. Each image is fitted to the run's ``--size`` and ``--channels`` as ``--data FOLDER``'s
        are; "auto" is the images' own side when they share a supported one (28, 32, 64; else 64) and grayscale
        when every file is. An unreadable file is one error line naming it."""
        import torch
        from torch.utils.data import TensorDataset

        from genkit import warn

        from . import data as imdata

        if options.conditional is False:
            raise GenkitError("--pairs: a manifest's images are conditioned on their row's key; drop --no-conditional",
                              exit_code=2)
        read = [imdata.read_image(Path(str(value)).expanduser(), str(value)) for value in values]
        shapes = {shape for _, shape in read}
        sides = {(h, w) for _, h, w in shapes}
        h, w = sides.pop() if len(sides) == 1 else (0, 0)
        # "auto": the images' own side when they all share one supported square size (else 64, as for a folder),
        # and grayscale when every file is (else RGB)
        size = options.size or (h if h == w and h in (28, 32, 64) else 64)
        channels = options.channels or (1 if all(c == 1 for c, _, _ in shapes) else 3)
        images, larger = [], 0
        for x, (c, h, w) in read:
            larger += int(max(h, w) > size or c > channels)
            images.append(imdata.fit(x, size, channels))
        if larger:
            warn(f"--pairs: {larger} of {len(values)} images are larger than {size} px or in colour; they are "
                 f"trained at {size} x {size} px, {channels} channel(s) (--size / --channels)")
        x = torch.cat(images)
        y = torch.as_tensor(labels, dtype=torch.int64)
        return Data(train=TensorDataset(x, y), conditional=True, num_classes=len(class_names),
                    class_names=list(class_names), transform=_to_float, source=f"{len(x)} listed images",
                    extra={"size": size, "channels": channels, "labels": y})

    # -- as the source of a cross-modal condition (genkit run TARGET --condition image) -------------
    def condition_encoder(self, options: ImageOptions, data: Data, dim: int):
        """A small CNN (model.ConditionEncoder: three stride-2 convolutions, average pooling, a linear map to
        ``dim``) over the images as ``Data.transform`` makes them; genkit normalises it and trains it with
        TARGET's discriminator."""
        from .model import ConditionEncoder

        return ConditionEncoder(options.channels or 3, dim)

    def condition_example(self, value, options: ImageOptions, data: Data):
        """``genkit sample RUN --condition digit.png``: the image file as a (1, C, H, W) uint8 tensor at the
        source data's size and channels (the form of its training tensors)."""
        from . import data as imdata

        x, _ = imdata.read_image(Path(str(value)).expanduser(), f"--condition {value}")
        return imdata.fit(x, options.size or int(data.extra.get("size", 64)),
                          options.channels or int(data.extra.get("channels", 3)))

    # -- models -------------------------------------------------------------------------------------
    def model_config(self, options: ImageOptions, data: Data):
        from .model import DCGANConfig

        return DCGANConfig(size=options.size, channels=options.channels, latent_dim=options.latent_dim,
                           g_width=options.g_width, d_width=options.d_width,
                           num_classes=data.num_classes if data.conditional and not data.cond_dim else 0,
                           cond_dim=data.cond_dim, d_norm=options.d_norm, augment=parse_policy(options.augment))

    def build_models(self, options, data):
        from .model import Discriminator, Generator

        cfg = self.model_config(options, data)
        return Generator(cfg), Discriminator(cfg)

    def sample_latent(self, n, options, *, rng, device):
        import torch

        return torch.randn(n, options.latent_dim, generator=rng, device=device)

    def sample_shape(self, options, data):
        return (options.channels, options.size, options.size)

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, ctx):
        """refnet metrics (see metrics.py) of ``eval_samples`` samples; {} when off or the data has no labels."""
        from genkit.refnet import train_examples
        from genkit.sampling import EVAL_SEED, generate

        from . import metrics

        n, data = ctx.options.eval_samples, ctx.data
        labels = data.extra.get("labels")
        if n <= 0 or labels is None or len(data.class_names) < 2 or data.train is None:
            return {}
        x = data.train.tensors[0]
        net, acc, test_idx = metrics.reference_classifier(x, labels, len(data.class_names), data.source,
                                                           ctx.cache_dir)
        fakes, conds = generate(self, ctx.generator, n, ctx.options, data, device=ctx.device, seed=EVAL_SEED)
        train = x[train_examples(len(x), test_idx)]
        return metrics.score(net, acc, x[test_idx], fakes, len(data.class_names), train=train, fake_cond=conds)

    # -- output -------------------------------------------------------------------------------------
    def write_snapshot(self, samples, cond, path, options, data):
        from torchvision.utils import save_image

        file = path.with_suffix(".png")
        save_image(samples, file, nrow=max(1, round(math.sqrt(len(samples)))), normalize=True, value_range=(-1, 1),
                   padding=2, pad_value=1.0)
        return [file]

    def write_samples(self, samples, cond, out_dir, options, data):
        from torchvision.utils import save_image

        files = []
        for i, img in enumerate(samples):
            label = f"-{data.class_names[int(cond[i])]}" if cond is not None and data.class_names else ""
            file = out_dir / f"sample-{i:05d}{label}.png"
            save_image(img, file, normalize=True, value_range=(-1, 1))
            files.append(file)
        return files + self.write_snapshot(samples, cond, out_dir / "grid", options, data)


def _to_float(batch):  # uint8 [0, 255] -> float [-1, 1], on the device
    return batch.float().div_(127.5).sub_(1.0)


@hookimpl
def genkit_register_domains(register):
    register(ImageDomain())
