"""Reply drafting with the base model (the adapter is for classification): prompts, batching, and on a GPU a static
KV cache in fixed shapes so the decode step is compiled once per shape (CUDA graphs) at worker start.

Why shapes matter on a GPU: measured on an H200, plain `generate` ran a 135M and an 8B model at about the same
tokens/s, so the time went to launching kernels, not to the GPU's arithmetic. transformers compiles the decode step
(`torch.compile`, "reduce-overhead": CUDA graphs) when generation uses a static cache, but a compiled graph holds
for one batch size and one cache length: a new shape recompiles, which takes seconds to minutes. So on a GPU every
batch is padded to one of a few batch sizes and every prompt to one of a few lengths (`Buckets`), and `warm_up`
compiles each combination before the worker takes its first ticket. On a CPU nothing is compiled and batches keep
their natural shape (padding costs real arithmetic there).

A finished sequence stops producing tokens (it emits padding) but keeps its slot until the batch's longest draft is
done or `max_new_tokens` is reached.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models import language as lang
from models import prompts

GREETINGS = {
    "en": "Dear customer,",
    "de": "Sehr geehrte Damen und Herren,",
    "fr": "Bonjour,",
    "es": "Hola,",
    "pt": "Olá,",
    "it": "Buongiorno,",
    "nl": "Beste klant,",
    "pl": "Dzień dobry,",
    "sv": "Hej,",
    "da": "Hej,",
    "no": "Hei,",
    "fi": "Hei,",
    "cs": "Dobrý den,",
    "tr": "Merhaba,",
    "ru": "Здравствуйте!",
    "uk": "Добрий день!",
    "bg": "Здравейте!",
    "el": "Καλησπέρα,",
    "zh": "您好，",
    "ja": "お問い合わせありがとうございます。",
    "ko": "안녕하세요,",
}
REPLY_INPUT_TOKENS = 320
EXAMPLE_TOKENS = 200  # of a past reply shown as an example
# Sampling-free decoding; the two penalties keep a small model from looping.
GENERATION = {"do_sample": False, "repetition_penalty": 1.15, "no_repeat_ngram_size": 4}


@dataclass(frozen=True)
class Buckets:
    """The batch sizes and prompt lengths (tokens) a static-cache batch is padded up to."""

    batch: tuple[int, ...] = (8, 32, 64)
    prompt: tuple[int, ...] = (384, 768)

    def batch_for(self, n: int) -> int:
        return next((b for b in self.batch if b >= n), self.batch[-1])

    def prompt_for(self, n: int) -> int:
        return next((p for p in self.prompt if p >= n), self.prompt[-1])


@dataclass
class Prompt:
    """One draft's prompt token ids and the greeting it was pre-filled with."""

    ids: list[int]
    greeting: str


class Drafter:
    """Batched drafting: `draft(texts, languages, examples)` -> plain-text replies, one per ticket."""

    def __init__(
        self,
        lm: Any,
        tok: Any,
        device: str,
        *,
        max_new_tokens: int,
        batch_size: int,
        static: bool | None = None,
        buckets: Buckets | None = None,
        specials: Sequence[str] = (),
    ) -> None:
        self.lm, self.tok, self.device = lm, tok, device
        self.max_new_tokens = max_new_tokens
        self.batch_size = max(1, batch_size)
        self.static = device.startswith("cuda") if static is None else static
        self.buckets = buckets or Buckets()
        self.specials = list(specials)
        self.warm_seconds: float | None = None
        self.warmed: list[tuple[int, int]] = []  # (batch, prompt length) shapes run by warm_up

    # ------------------------------------------------------------------ prompts
    def prompt(self, text: str, code: str | None, example: str | None = None, evidence: str | None = None) -> Prompt:
        """The chat prompt for one ticket (its text cut to REPLY_INPUT_TOKENS), ending in the language's greeting;
        `evidence` is quoted knowledge-base passages (already within the caller's token budget)."""
        ids = self.tok(text, add_special_tokens=False)["input_ids"][:REPLY_INPUT_TOKENS]
        shown = None
        if example:
            ex_ids = self.tok(prompts.sanitize(example, self.specials), add_special_tokens=False)["input_ids"]
            shown = self.tok.decode(ex_ids[:EXAMPLE_TOKENS])
        quoted = prompts.sanitize(evidence, self.specials) if evidence else None
        msgs = prompts.reply_messages(self.tok.decode(ids), lang.name(code), shown, quoted)
        try:
            rendered = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except (ValueError, AttributeError):  # a base without a chat template
            rendered = "\n\n".join(m["content"] for m in msgs) + "\n\n"
        greeting = GREETINGS.get(code or "", "")
        return Prompt(self.tok(rendered + greeting, add_special_tokens=False)["input_ids"], greeting)

    # ------------------------------------------------------------------ drafting
    def draft(
        self,
        texts: Sequence[str],
        languages: Sequence[str | None],
        examples: Sequence[str | None] | None = None,
        evidence: Sequence[str | None] | None = None,
    ) -> list[str]:
        """One reply per ticket, in input order; `examples` are past replies and `evidence` knowledge-base passages
        shown in the prompt."""
        examples = examples or [None] * len(texts)
        evidence = evidence or [None] * len(texts)
        built = [self.prompt(t, c, e, v) for t, c, e, v in zip(texts, languages, examples, evidence, strict=True)]
        bodies = self.generate([p.ids for p in built])
        return [
            prompts.clean_reply((p.greeting + body) if p.greeting else body, text)
            for p, body, text in zip(built, bodies, texts, strict=True)
        ]

    def generate(self, prompt_ids: Sequence[list[int]]) -> list[str]:
        """The decoded continuation of each prompt (greedy), batched by `batch_size` (and by bucket when static)."""
        out: list[str] = [""] * len(prompt_ids)
        if self.static:
            groups: dict[int, list[int]] = {}
            for i, ids in enumerate(prompt_ids):
                groups.setdefault(self.buckets.prompt_for(len(ids)), []).append(i)
            step = min(self.batch_size, self.buckets.batch[-1])
            for length, members in sorted(groups.items()):
                for s in range(0, len(members), step):
                    chunk = members[s : s + step]
                    texts = self._run([prompt_ids[i] for i in chunk], length, self.buckets.batch_for(len(chunk)))
                    for i, text in zip(chunk, texts, strict=False):
                        out[i] = text
        else:
            for s in range(0, len(prompt_ids), self.batch_size):
                chunk = list(range(s, min(s + self.batch_size, len(prompt_ids))))
                for i, text in zip(chunk, self._run([prompt_ids[i] for i in chunk], None, None), strict=True):
                    out[i] = text
        return out

    def _run(self, rows: list[list[int]], length: int | None, batch: int | None) -> list[str]:
        """generate() on one batch, left-padded to `length` and filled to `batch` rows (copies of the first, whose
        outputs are dropped) when static; returns the first len(rows) continuations."""
        import torch

        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        width = length if length is not None else max(len(r) for r in rows)
        filled = rows + [rows[0]] * ((batch or len(rows)) - len(rows))
        ids = torch.full((len(filled), width), pad, dtype=torch.long)
        mask = torch.zeros((len(filled), width), dtype=torch.long)
        for i, r in enumerate(filled):
            r = r[-width:]  # a prompt longer than the largest bucket keeps its end (the question and greeting)
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        extra = {"cache_implementation": "static"} if self.static else {}
        with torch.inference_mode(), _adapter_off(self.lm):
            gen = self.lm.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=self.max_new_tokens,
                pad_token_id=pad,
                **GENERATION,
                **extra,
            )
        new = gen[: len(rows), width:]
        return [self.tok.decode(g, skip_special_tokens=True) for g in new]

    def warm_up(self) -> float:
        """Compile every (batch, prompt length) bucket once (static mode only), so no request waits for it; returns
        the seconds it took (0 when there is nothing to compile)."""
        if not self.static:
            return 0.0
        import torch

        started = time.perf_counter()
        # more graphs than torch.compile keeps by default (8): one per bucket pair, plus the prefill shapes
        torch._dynamo.config.cache_size_limit = max(
            int(torch._dynamo.config.cache_size_limit), 4 * len(self.buckets.batch) * len(self.buckets.prompt)
        )
        probe = self.tok("Hello", add_special_tokens=False)["input_ids"] or [0]
        # every bucket a batch can be padded up to: a chunk holds at most min(batch_size, largest bucket) drafts
        largest = self.buckets.batch_for(min(self.batch_size, self.buckets.batch[-1]))
        for length in self.buckets.prompt:
            for batch in self.buckets.batch:
                if batch <= largest:
                    self._run([probe] * min(batch, self.batch_size), length, batch)
                    self.warmed.append((batch, length))
        self.warm_seconds = time.perf_counter() - started
        return self.warm_seconds


class _adapter_off:
    """Draft with the base model: a peft model's adapter disabled, any other model as it is."""

    def __init__(self, lm: Any) -> None:
        self._ctx = lm.disable_adapter() if hasattr(lm, "disable_adapter") else None

    def __enter__(self) -> None:
        if self._ctx is not None:
            self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
