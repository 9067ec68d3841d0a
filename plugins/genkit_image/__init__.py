"""genkit's image domain: DCGAN (Radford et al., ICLR 2016) for 28/32/64-pixel images, 1 or 3 channels,
unconditional or class-conditional. The seed document's MNIST example, done right.

This module is imported when genkit loads its plugins, so it imports no torch; the model and data
modules are imported by the methods that need them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from genkit import Data, Domain, GenkitError, Option, hookimpl

DEFAULT_DATA = "mnist5k"
NATIVE_SIZE = {"mnist5k": 28, "mnist": 28, "fashion-mnist": 28, "cifar10": 32}


class ImageDomain(Domain):
    name = "image"
    summary = "DCGAN on 28/32/64-pixel images (default: handwritten digits, offline)"
    paper = "Radford, Metz & Chintala, Unsupervised Representation Learning with DCGANs, ICLR 2016"
    sample_ext = ".png"
    best_metric = ("refnet_fd", "min")  # checkpoints/best names the checkpoint with the lowest refnet FD
    options = (
        Option("size", 0, "Image side in pixels: 28, 32 or 64 (0 = the data's: 28 for MNIST, 32 for CIFAR-10, else 64).",
               choices=(0, 28, 32, 64)),
        Option("channels", 0, "1 (grayscale) or 3 (RGB); 0 = as the data.", choices=(0, 1, 3)),
        Option("conditional", False, "Class-conditional generator and projection discriminator (labels from the data)."),
        Option("latent_dim", 100, "Dimension of z ~ N(0, I)."),
        Option("g_width", 32, "Generator width (ngf): channels of its last hidden layer."),
        Option("d_width", 32, "Discriminator width (ndf): channels of its first layer."),
        Option("d_norm", "batch", "Discriminator normalisation: batch, spectral, layer or none.",
               choices=("batch", "spectral", "layer", "none")),
        Option("augment", "", "DiffAugment policies for small data, comma-separated: color, translation, cutout ('' = off)."),
        Option("eval_samples", 1000, "Samples scored by the reference classifier at evaluations (0 = no evaluation)."),
    )
    # Radford et al.: Adam, lr 2e-4, beta1 0.5, batch 128; 3000 steps of batch 64 is about 38 epochs of
    # the 5k MNIST subset and takes about 4 minutes on 2 CPU cores (docs/benchmarks.md).
    recipe = {"steps": 3000, "batch_size": 64, "loss": "ns", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5,
              "beta2": 0.999, "checkpoint_every": 1000, "sample_every": 500, "log_every": 50}
    presets = {
        # The paper's own settings: batch 128 and the same Adam; a GPU-sized run.
        "paper": {"batch_size": 128, "steps": 20000, "g_width": 64, "d_width": 64},
        # A minute-long smoke run: enough to see digit-like strokes.
        "quick": {"steps": 400, "sample_every": 100, "checkpoint_every": 200},
    }

    # -- data ---------------------------------------------------------------------------------------
    def default_data(self, options: Mapping[str, Any]) -> str:
        return DEFAULT_DATA

    def load_data(self, spec: str, options: Mapping[str, Any], *, cache_dir: Path) -> Data:
        import torch
        from torch.utils.data import TensorDataset

        from . import data as imdata

        size, channels = options["size"], options["channels"]
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
        conditional = bool(options["conditional"])
        if conditional and (y is None or len(names) < 2):
            raise GenkitError(f"--data {spec}: --conditional needs class labels (sub-folders, or labels in the .npz)")
        labels = y if y is not None else torch.zeros(len(x), dtype=torch.int64)

        def to_float(batch):  # uint8 [0, 255] -> float [-1, 1], on the device
            return batch.float().div_(127.5).sub_(1.0)

        return Data(train=TensorDataset(x, labels), conditional=conditional,
                    num_classes=len(names) if conditional else 0, class_names=names,
                    transform=to_float, source=source,
                    extra={"size": size, "channels": channels, "_cache_dir": Path(cache_dir), "_labels": y})

    # -- models -------------------------------------------------------------------------------------
    def model_config(self, options: Mapping[str, Any], data: Data):
        from .augment import parse_policy
        from .model import DCGANConfig

        return DCGANConfig(size=data.extra["size"], channels=data.extra["channels"], latent_dim=options["latent_dim"],
                           g_width=options["g_width"], d_width=options["d_width"],
                           num_classes=data.num_classes if data.conditional else 0, d_norm=options["d_norm"],
                           augment=parse_policy(options["augment"]))

    def build_models(self, options, data):
        from .model import Discriminator, Generator

        cfg = self.model_config(options, data)
        return Generator(cfg), Discriminator(cfg)

    def sample_latent(self, n, options, *, rng, device):
        import torch

        return torch.randn(n, options["latent_dim"], generator=rng, device=device)

    def sample_shape(self, options, data):
        return (data.extra["channels"], data.extra["size"], data.extra["size"])

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, ctx):
        """refnet metrics (see metrics.py) of ``eval_samples`` samples; {} when off or the data has no labels."""
        import torch

        from . import metrics

        n, data = ctx.options["eval_samples"], ctx.data
        labels = data.extra.get("_labels")
        if n <= 0 or labels is None or len(data.class_names) < 2 or data.train is None:
            return {}
        x = data.train.tensors[0]
        net, acc, test_idx = metrics.reference_classifier(x, labels, len(data.class_names), data.source,
                                                           data.extra["_cache_dir"])
        g = torch.Generator(device=ctx.device).manual_seed(12345)  # not ctx.rng: evaluation must not move training's stream
        fakes = []
        for start in range(0, n, 500):
            m = min(500, n - start)
            z = self.sample_latent(m, ctx.options, rng=g, device=ctx.device)
            cond = (torch.arange(start, start + m, device=ctx.device) % data.num_classes) if data.conditional else None
            fakes.append(self.generate(ctx.generator, z, cond, ctx.options).cpu())
        return metrics.score(net, acc, x[test_idx], torch.cat(fakes), len(data.class_names))

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


@hookimpl
def genkit_register_domains(register):
    register(ImageDomain())
