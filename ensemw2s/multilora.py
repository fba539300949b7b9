"""Shared-base LoRA experts: T adapters of one base model run as one batch of T x B rows.

Experts that are LoRA adapters of one base differ only in their low-rank updates
y = W x + s_t B_t A_t x. Loading the base once and stacking the adapters' (A_t, B_t) lets one forward
over T x B rows (block t = rows t*B .. t*B+B-1 carries adapter t) serve all T experts: the base weights
are read once per step for every expert, and decoding a few rows is bound by exactly that read, so T
experts cost little more than one; memory holds one base instead of T. The numbers are those of T
separate PeftModels up to float rounding (each adapter's scaling is folded into its B).

Adapters are loaded with peft, so every option that maps adapter weights onto modules (target_modules,
rank_pattern, alpha_pattern, use_rslora, layers_to_transform, ...) is honoured; their weights are
then collected into stacks and peft's layers removed again (`unload`). At run time the base is a plain
transformers model with one forward hook per adapted layer that adds the stacked update. Adapters that
change more than a low-rank update of Linear layers (modules_to_save, trained biases, DoRA and the other
LoRA variants, LoRA on embeddings) cannot share a base: `load_lora_stack` returns None and the caller
loads them as separate models.

`LoRAStack` is an expert runner for `ensemble.Ensemble` (the same two methods as
`ensemble.SeparateExperts`: `logits`, `select_rows`); `LoRAStack.experts` are per-adapter views for
the code that runs one expert at a time (per-expert token caches, lm-eval's max_length).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from ensemw2s.models import adapter_base, is_adapter, load_causal_lm

# adapter_config.json keys whose non-empty value changes weights other than a LoRA update of a Linear
# layer (and so the base itself, which the adapters would then no longer share)
_BASE_CHANGING = ("modules_to_save", "trainable_token_indices", "layer_replication", "target_parameters")


def _base_key(ref: str) -> str:
    """Identity of a base reference: a local path resolved (relative and absolute spellings agree)."""
    return str(Path(ref).resolve()) if Path(ref).exists() else ref


def shared_base(refs: Sequence[str | Path]) -> str | None:
    """The base model every ref is a plain LoRA adapter of, or None (not all adapters, several bases,
    or an adapter that changes more than LoRA updates of Linear layers)."""
    if not refs or not all(is_adapter(r) for r in refs):
        return None
    for r in refs:
        cfg = json.loads((Path(r) / "adapter_config.json").read_text())
        if (cfg.get("peft_type") != "LORA" or cfg.get("use_dora") or cfg.get("lora_bias")
                or cfg.get("bias", "none") != "none" or any(cfg.get(k) for k in _BASE_CHANGING)):
            return None
    bases = {_base_key(adapter_base(r)) for r in refs}
    return adapter_base(refs[0]) if len(bases) == 1 else None


def _stack_updates(peft_model, n: int) -> dict[str, tuple[Tensor, Tensor]] | None:
    """Adapters "0".."n-1" of a PeftModel -> {module name: (A (n, in, r), B (n, r, out))}, or None when a
    layer is not a plain LoRA Linear. Ranks are zero-padded to the largest; an adapter that does not
    touch a module gets zeros there; B carries the adapter's scaling."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    updates = {}
    for name, module in peft_model.base_model.model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if type(module) is not LoraLinear or module.lora_variant or any(
                b.bias is not None for b in module.lora_B.values()):
            return None
        present = [t for t in range(n) if str(t) in module.lora_A]
        first = module.lora_A[str(present[0])].weight  # (r, in)
        rank = max(module.r[str(t)] for t in present)
        A = first.new_zeros(n, module.in_features, rank)
        B = first.new_zeros(n, rank, module.out_features)
        for t in present:
            a, b, r = module.lora_A[str(t)].weight, module.lora_B[str(t)].weight, module.r[str(t)]
            A[t, :, :r] = a.T
            B[t, :r, :] = b.T * module.scaling[str(t)]
        updates[name] = (A, B)
    return updates


class LoRAStack:
    """T LoRA adapters on one base: `logits` runs all T on T x B rows in one forward of the base."""

    def __init__(self, base: nn.Module, updates: dict[str, tuple[Tensor, Tensor]], n: int):
        self.base = base.eval()
        self.n = n
        self._active = slice(0, n)  # the adapters of the row blocks of the current forward, in order
        for name, (A, B) in updates.items():
            base.get_submodule(name).register_forward_hook(self._adder(A, B))
        self.experts = [AdapterView(self, t) for t in range(n)]

    def _adder(self, A: Tensor, B: Tensor):
        """Forward hook of one adapted layer: adds block t's update s_t B_t A_t x to block t's output."""

        def add_update(module, args, out):
            a, b = A[self._active], B[self._active]  # (T', in, r), (T', r, out)
            x = args[0].reshape(a.shape[0], -1, a.shape[1])  # (T', B*L, in): one block per adapter
            y = out.reshape(a.shape[0], -1, b.shape[2])  # (T', B*L, out)
            if y.dtype == a.dtype:
                return torch.baddbmm(y, torch.bmm(x, a), b).view_as(out)  # y + (x A) B
            # a half-precision base with float32 adapters (peft's autocast_adapter_dtype): update in float32
            return torch.baddbmm(y.to(a.dtype), torch.bmm(x.to(a.dtype), a), b).to(out.dtype).view_as(out)

        return add_update

    @contextmanager
    def using(self, adapters: slice):
        """Run the base with these adapters on the row blocks (slice(t, t+1): expert t alone)."""
        previous, self._active = self._active, adapters
        try:
            yield
        finally:
            self._active = previous

    def logits(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, logits_to_keep: int,
               cache=None, use_cache: bool = False) -> tuple[Tensor, object]:
        """(B, L) inputs -> (T, B, logits_to_keep, V) logits of every adapter, and the KV cache of the T x B rows.

        The rows are repeated once per adapter; `cache` is the one this method returned for the previous step.
        """
        T, B = self.n, input_ids.shape[0]
        out = self.base(input_ids=input_ids.repeat(T, 1), attention_mask=attention_mask.repeat(T, 1),
                        position_ids=position_ids.repeat(T, 1), cache=cache, use_cache=use_cache,
                        logits_to_keep=logits_to_keep)
        return out.logits.view(T, B, *out.logits.shape[1:]), out.cache

    def select_rows(self, cache, keep: Tensor, n_rows: int) -> None:
        """Keep rows `keep` (of the n_rows of every adapter's block) in the stacked cache."""
        blocks = torch.arange(self.n, device=keep.device).unsqueeze(1) * n_rows  # (T, 1)
        cache.batch_select_indices((blocks + keep).flatten())  # (T * len(keep),), block order kept


class AdapterView(nn.Module):
    """Expert t of a LoRAStack as a model of its own (the base with adapter t only), for code that runs
    one expert at a time. Holds no weights of its own."""

    def __init__(self, stack: LoRAStack, t: int):
        super().__init__()
        self.base = stack.base
        self._stack = stack
        self._only = slice(t, t + 1)

    @property
    def config(self):
        return self.base.config

    @property
    def generation_config(self):
        return self.base.generation_config

    def get_output_embeddings(self) -> nn.Module:
        return self.base.get_output_embeddings()

    def forward(self, *args, **kwargs):
        with self._stack.using(self._only):
            return self.base(*args, **kwargs)


def load_lora_stack(refs: Sequence[str | Path], dtype: str = "float32",
                    device: str | torch.device = "cpu") -> LoRAStack | None:
    """Load the adapters onto one copy of their shared base, or return None if they do not share one
    (see `shared_base`; the caller then loads them as separate models)."""
    from peft import PeftModel

    base = shared_base(refs)
    if base is None:
        return None
    model = PeftModel.from_pretrained(load_causal_lm(base, dtype=dtype, device=device), str(refs[0]),
                                      adapter_name="0")
    for t, ref in enumerate(refs[1:], start=1):
        model.load_adapter(str(ref), adapter_name=str(t))
    updates = _stack_updates(model, len(refs))
    if updates is None:
        return None
    return LoRAStack(model.unload().to(device), updates, len(refs))
