"""Running a decoder-only backbone in two parts (bottom layers frozen and cacheable, top layers LoRA-tuned),
tokenising tickets for classification, and pooling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models import prompts


def decoder(model: Any) -> Any:
    """The inner decoder stack (`model.model` for Llama/Qwen/Mistral-style causal LMs, also under peft)."""
    m = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(m, "layers"):
        return m
    inner = getattr(m, "model", None)
    if inner is None or not hasattr(inner, "layers"):
        raise TypeError(f"unsupported architecture {type(m).__name__}: no .model.layers")
    return inner


def num_layers(model: Any) -> int:
    return len(decoder(model).layers)


def additive_mask(attention_mask: Any, dtype: Any) -> Any:
    """(B,1,T,T) additive attention mask: 0 where query i may attend key j (j <= i and j a real token), the dtype's
    minimum elsewhere.

    Built here rather than with transformers' mask helpers: those are private and changed signature between releases
    (`past_key_values=` in 5.17, `cache=` in 5.25), while an additive 4D mask is what the eager and SDPA attention of
    every release since 4.x accept. With right padding every query row sees at least the first token, so no row is
    fully masked (which would give NaN)."""
    import torch

    t = attention_mask.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
    mask = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def run_layers(
    model: Any, hidden: Any, attention_mask: Any, start: int, end: int, final_norm: bool, checkpoint: bool = False
) -> Any:
    """hidden (B,T,D) as input to layer `start` -> output of layer end-1 (normed if final_norm). With `checkpoint`
    (while training) each layer's activations are recomputed in the backward pass instead of kept: a 1-8B model's
    top layers then fit a GPU at full batch, for about a third more compute."""
    import torch
    from torch.utils.checkpoint import checkpoint as recompute

    dec = decoder(model)
    position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    mask = additive_mask(attention_mask, hidden.dtype)
    pos = dec.rotary_emb(hidden, position_ids=position_ids)

    def call(layer: Any, h: Any) -> Any:
        out = layer(h, attention_mask=mask, position_embeddings=pos, position_ids=position_ids)
        return out[0] if isinstance(out, tuple) else out  # transformers < 4.54 returned (hidden, ...)

    for layer in dec.layers[start:end]:
        if checkpoint and torch.is_grad_enabled():
            hidden = recompute(call, layer, hidden, use_reentrant=False)
        else:
            hidden = call(layer, hidden)
    if final_norm:
        hidden = dec.norm(hidden)
    return hidden


def embed(model: Any, input_ids: Any) -> Any:
    return decoder(model).embed_tokens(input_ids)


def pool(hidden: Any, attention_mask: Any) -> Any:
    """Concatenate the mean over real tokens and the last real token (right padding)."""
    import torch

    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    last_idx = attention_mask.long().sum(1).clamp(min=1) - 1
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_idx]
    return torch.cat([mean, last], dim=-1).float()


class ClassifyTokenizer:
    """Prefix + ticket tokens (cut to max_tokens) + suffix, right padded."""

    def __init__(self, tokenizer: Any, max_tokens: int) -> None:
        self.tok = tokenizer
        self.max_tokens = max_tokens
        self.prefix = tokenizer(prompts.classify_prefix(), add_special_tokens=False)["input_ids"]
        self.suffix = tokenizer(prompts.classify_suffix(), add_special_tokens=False)["input_ids"]
        self.specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]

    def ticket_ids(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tok([prompts.sanitize(t, self.specials) for t in texts], add_special_tokens=False)["input_ids"]
        return [ids[: self.max_tokens] for ids in enc]

    def __call__(self, texts: Sequence[str]) -> tuple[Any, Any]:
        import torch

        seqs = [self.prefix + ids + self.suffix for ids in self.ticket_ids(texts)]
        width = max(len(s) for s in seqs)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return ids, mask
