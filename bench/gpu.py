"""The one device check: the model path at production shapes with random weights (weights do not travel to a lent
GPU; a config and the bundled tokenizer do), printed as one table.

Per shape (SmolLM2-135M, SmolLM2-1.7B, Llama-3-8B by default):
- classification: backbone + label heads alone, tickets/s at `--batch`, and MFU against this device's measured bf16
  matmul peak;
- product predict vs backbone: `Triager.predict(draft_replies=False)` (LLM + lexical partner + neighbour votes from
  the shipped adapter's ticket memory, calibration) over the same tickets, as a ratio of tickets/s;
- drafting: `models.drafting.Drafter` tokens/s with natural shapes vs a static, compiled KV cache (one bucket of
  exactly the measured shape, compiled by `warm_up` before timing), `--new-tokens` greedy tokens from
  `--prompt-tokens`-token prompts;
- training: one LoRA step of `models.train`'s model on cached layer features (`--train-tokens` tokens a ticket), the
  batch from `models.batch_plan` and gradient checkpointing as `train` would choose; step seconds and tokens/s.

On the GPU machine (bf16, CUDA; the tokenizer files are ignored by git, so they are carried):
    python bench/gpu.py
  with carry: var/models/smollm2-135m-instruct/hf/tokenizer.json, .../tokenizer_config.json,
  .../chat_template.jinja
On a CPU, the same code at tiny shapes (what tests/models/test_bench_gpu.py runs):
    python bench/gpu.py --device cpu --tiny
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("USE_HUB_KERNELS", "NO")  # no hub on the device machine (models/loading.py does the same)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

LLAMA = {"model_type": "llama", "hidden_act": "silu", "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2}
SHAPES: dict[str, dict[str, Any]] = {
    "135m": dict(LLAMA, vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, rope_theta=100000.0),
    "1.7b": dict(LLAMA, vocab_size=49152, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                 num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=True, rope_theta=130000.0),
    "8b": dict(LLAMA, vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False, rope_theta=500000.0),
    "tiny": dict(LLAMA, vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0),
}  # fmt: skip
TOKENIZER = REPO / "var" / "models" / "smollm2-135m-instruct" / "hf"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Any, device: str, reps: int = 2) -> float:
    """Best wall seconds of `reps` runs after one warm-up run."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def peak_flops(device: str, dtype: torch.dtype) -> float:
    """This device's matmul FLOP/s at a large square shape (the denominator of MFU)."""
    n = 8192 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    s = timed(lambda: a @ b, device, reps=5)
    return 2 * n**3 / s


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOKENIZER), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def ticket_texts(n: int) -> list[str]:
    """Real ticket texts: the shipped adapter's ticket memory, cycled to n."""
    from models.adapter import DEFAULT_ADAPTER
    from models.ticket_memory import FILE

    with gzip.open(DEFAULT_ADAPTER / FILE, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    return [texts[i % len(texts)] for i in range(n)]


def base_model(shape: dict[str, Any], device: str, dtype: torch.dtype) -> Any:
    """A causal LM of the shape with random weights, created directly on the device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**shape)
    with torch.device(device):
        lm = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    return lm.eval()


def forward_flops(lm: Any, tokens: int) -> float:
    """Matmul FLOPs of one forward pass over `tokens` tokens (2 x non-embedding parameters x tokens; attention's
    quadratic term is small at these lengths and left out, so MFU is a slight underestimate)."""
    n = sum(p.numel() for name, p in lm.named_parameters() if "embed_tokens" not in name and "lm_head" not in name)
    return 2.0 * n * tokens


def measure_shape(name: str, args: argparse.Namespace, dtype: torch.dtype, peak: float) -> dict[str, Any]:
    """Every figure for one shape; the model is freed before returning."""
    from peft import LoraConfig, get_peft_model

    from models.adapter import DEFAULT_ADAPTER, read_meta
    from models.backbone import ClassifyTokenizer
    from models.classifier import Heads, logits_for

    device = args.device
    tok = tokenizer()
    lm = base_model(SHAPES[name], device, dtype)
    n_layers = lm.config.num_hidden_layers
    meta = read_meta(DEFAULT_ADAPTER)
    meta["max_tokens"] = args.tokens
    top = min(4, n_layers)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                      "up_proj", "down_proj"], layers_to_transform=list(range(n_layers - top, n_layers)))  # fmt: skip
    lm = get_peft_model(lm, lora).eval()
    heads = Heads(lm.config.hidden_size, meta["fields"]).to(device).eval()
    ctok = ClassifyTokenizer(tok, args.tokens)
    texts = ticket_texts(args.tickets)
    row: dict[str, Any] = {"shape": name, "params_b": sum(p.numel() for p in lm.parameters()) / 1e9}

    # classification: backbone + heads alone
    _ids, mask = ctok(texts)
    real_tokens = int(mask.sum())
    s = timed(lambda: logits_for(lm, heads, ctok, texts, args.batch, device, False), device)
    row["cls_tickets_s"] = len(texts) / s
    row["mfu"] = forward_flops(lm, real_tokens) / s / peak

    # the product's predict (LLM + CPU members + calibration) over the same tickets
    from models.config import ModelConfig
    from models.inference import TicketInput, Triager
    from models.lexical import LexicalModel
    from models.ticket_memory import TicketMemory

    cfg = ModelConfig(device=device, batch_size=args.batch, max_new_tokens=args.new_tokens)
    tri = Triager(cfg, lm, tok, heads, LexicalModel.load(DEFAULT_ADAPTER), meta, device, name, "random",
                  TicketMemory.load(DEFAULT_ADAPTER))  # fmt: skip
    inputs = [TicketInput(str(i), "", t) for i, t in enumerate(texts)]
    p = timed(lambda: tri.predict(inputs, draft_replies=False), device, reps=1)
    row["predict_tickets_s"] = len(texts) / p
    row["predict_vs_backbone"] = row["predict_tickets_s"] / row["cls_tickets_s"]

    # drafting: natural shapes vs a static compiled cache, same prompts
    from models.drafting import Buckets, Drafter

    prompt = (tok("Ticket text " * args.prompt_tokens, add_special_tokens=False)["input_ids"])[: args.prompt_tokens]
    prompts = [prompt] * args.draft_batch
    new = args.draft_batch * args.new_tokens
    natural = Drafter(lm, tok, device, max_new_tokens=args.new_tokens, batch_size=args.draft_batch, static=False)
    row["draft_tok_s"] = new / timed(lambda: natural.generate(prompts), device, reps=1)
    static = Drafter(lm, tok, device, max_new_tokens=args.new_tokens, batch_size=args.draft_batch, static=True,
                     buckets=Buckets((args.draft_batch,), (args.prompt_tokens,)))  # fmt: skip
    row["compile_s"] = static.warm_up()
    row["static_draft_tok_s"] = new / timed(lambda: static.generate(prompts), device, reps=1)
    row["draft_speedup"] = row["static_draft_tok_s"] / row["draft_tok_s"]

    # training: one step of the top-layer LoRA model on cached features
    from models.batch_plan import plan_batch
    from models.classifier import TopModel
    from models.config import TrainConfig
    from models.train import _collate, _Features, _probe_step, _use_checkpointing

    lm.train()
    tcfg = TrainConfig(max_tokens=args.train_tokens)
    checkpoint = _use_checkpointing(tcfg, device, top, lm.config.hidden_size)
    model = TopModel(lm, heads.train(), n_layers - top, device, False, checkpoint=checkpoint)
    n_rows = tcfg.batch_size * 2
    hidden = torch.randn(n_rows, args.train_tokens, lm.config.hidden_size, dtype=torch.bfloat16)
    ds = _Features(hidden, torch.ones(n_rows, args.train_tokens, dtype=torch.long),
                   torch.zeros(n_rows, len(meta["fields"]), dtype=torch.long).numpy())  # fmt: skip
    plan = plan_batch(tcfg.batch_size, lambda n: _probe_step(model, ds, n, device), device)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)

    def step() -> None:
        for a in range(plan.accumulation):
            batch = _collate([ds[i] for i in range(a * plan.per_device, (a + 1) * plan.per_device)])
            model(**{k: v.to(device) for k, v in batch.items()})["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    st = timed(step, device)
    row["train_step_s"] = st
    row["train_tok_s"] = plan.effective * args.train_tokens / st
    row["train_batch"] = f"{plan.per_device}x{plan.accumulation}" + (" ckpt" if checkpoint else "")
    return row  # the models go with this frame; main() empties the CUDA cache before the next shape


COLUMNS = [
    ("shape", "{}"),
    ("params_b", "{:.2f}"),
    ("cls_tickets_s", "{:.0f}"),
    ("mfu", "{:.2f}"),
    ("predict_tickets_s", "{:.0f}"),
    ("predict_vs_backbone", "{:.2f}"),
    ("draft_tok_s", "{:.0f}"),
    ("static_draft_tok_s", "{:.0f}"),
    ("draft_speedup", "{:.1f}"),
    ("compile_s", "{:.0f}"),
    ("train_step_s", "{:.3f}"),
    ("train_tok_s", "{:.0f}"),
    ("train_batch", "{}"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default="135m,1.7b,8b")
    ap.add_argument("--tiny", action="store_true", help="the tiny shape and small sizes (a CPU check of this script)")
    ap.add_argument("--tickets", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=128, help="ticket tokens classified")
    ap.add_argument("--draft-batch", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=120)
    ap.add_argument("--train-tokens", type=int, default=256)
    args = ap.parse_args()
    if args.tiny:
        args.shapes, args.tickets, args.batch, args.tokens = "tiny", 32, 16, 32
        args.draft_batch, args.prompt_tokens, args.new_tokens, args.train_tokens = 4, 32, 8, 32
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    started = time.perf_counter()
    peak = peak_flops(args.device, dtype)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# {time.strftime('%Y-%m-%d')} {name}; torch {torch.__version__}; peak matmul {peak / 1e12:.1f} TFLOP/s "
          f"({str(dtype).removeprefix('torch.')}); classify {args.tickets} tickets x {args.tokens} tokens, batch "
          f"{args.batch}; draft batch {args.draft_batch} x {args.prompt_tokens}+{args.new_tokens} tokens; train "
          f"{args.train_tokens} tokens", flush=True)  # fmt: skip
    print("| " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS), flush=True)
    for shape in args.shapes.split(","):
        row = measure_shape(shape, args, dtype, peak)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        print("| " + " | ".join(fmt.format(row[c]) for c, fmt in COLUMNS) + " |", flush=True)
    print(f"# {time.perf_counter() - started:.0f} s in all", flush=True)


if __name__ == "__main__":
    main()
