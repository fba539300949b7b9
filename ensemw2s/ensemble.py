"""The token-level ensemble: batched model calls, log-likelihood scoring and cached greedy decoding.

The experts' next-token distributions are combined by a combine rule (combine.py, named in
kinds.COMBINERS). Per-expert scoring for later combination (token_cache.py) uses the batches and model
calls defined here (`scoring_batches`, `continuation_logprobs`), so cached and direct scores agree;
manifests (manifest.py) name the experts `load_ensemble` loads.

How the T experts run together is an expert runner's business (`logits`, `select_rows`):
`SeparateExperts` runs T models, one forward and one KV cache each; `multilora.LoRAStack` runs T LoRA
adapters of one base in a single forward over T x B rows (chosen by `Ensemble.from_pretrained`).

Inputs are left-padded everywhere (scoring and decoding), so that every row ends at the last column:
logits are computed only for the positions needed (`logits_to_keep`), and position ids come from the
attention mask. Padded positions hold token id PAD_ID: they are masked, so the id never matters.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ensemw2s.combine import normalised_weights
from ensemw2s.errors import UserError
from ensemw2s.kinds import COMBINERS
from ensemw2s.manifest import read_manifest

PAD_ID = 0  # any valid id: padded positions are masked out of attention and never scored
# A shared-context batch holds up to batch_size contexts and this many times batch_size continuations (a batch
# of 4-choice questions): its context forward has batch_size rows, as a flat batch; its continuation forward
# has more rows but only the continuations' few positions.
CONTINUATIONS_PER_CONTEXT = 4


# ---------------------------------------------------------------------------------------------
# model calls


def model_device(model) -> torch.device:
    """Where the model's weights are (and so where its inputs must go)."""
    return next(model.parameters()).device


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows, as HF generate makes them: (B, L) -> (B, L)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _left_pad(seqs: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> left-padded (B, L) ids and attention mask."""
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, L - len(s):] = torch.tensor(list(s), dtype=torch.long)
        mask[i, L - len(s):] = 1
    return ids.to(device), mask.to(device)


@dataclass(frozen=True)
class ScoringBatch:
    """Requests scored in one forward of (context + continuation)[:-1] each, left-padded: the path for a
    context with one continuation, or one that max_length truncates (each request then sees its own context)."""

    index: list[int]  # request numbers, in batch order
    input_ids: torch.Tensor  # (B, L) left-padded (context + continuation)[:-1]
    attention_mask: torch.Tensor  # (B, L)
    targets: torch.Tensor  # (B, C) continuation tokens, right-aligned
    valid: torch.Tensor  # (B, C) False where a shorter continuation is padded

    def logits(self, runner) -> torch.Tensor:
        """(T, B, C, V) each expert's logits at the positions that predict the continuation tokens."""
        out, _ = runner.logits(self.input_ids, self.attention_mask, _positions(self.attention_mask),
                               self.targets.shape[1])
        return out


@dataclass(frozen=True)
class SharedContextBatch:
    """Requests that share a context (a multiple-choice question's choices), scored with each context run
    once: its KV cache is copied to one row per continuation, and the continuations run from there. A
    question of K choices costs one context plus K short continuations instead of K contexts."""

    index: list[int]  # request numbers, in row order
    context_ids: torch.Tensor  # (Q, L) the distinct contexts, left-padded
    context_mask: torch.Tensor  # (Q, L)
    owner: torch.Tensor  # (B,) each request's context row
    targets: torch.Tensor  # (B, C) continuation tokens, left-aligned (right-padded)
    valid: torch.Tensor  # (B, C) False where a shorter continuation is padded

    def logits(self, runner) -> torch.Tensor:
        """(T, B, C, V) each expert's logits at the positions that predict the continuation tokens."""
        first, cache = runner.logits(self.context_ids, self.context_mask, _positions(self.context_mask), 1,
                                     use_cache=True)  # (T, Q, 1, V): predicts each continuation's first token
        first = first[:, self.owner]  # (T, B, 1, V)
        n = self.targets.shape[1] - 1  # the continuations' first C-1 tokens predict the rest
        if n == 0:
            return first
        runner.select_rows(cache, self.owner, len(self.context_ids))  # one cache row per request
        mask = torch.cat([self.context_mask[self.owner], self.valid[:, :n].long()], dim=1)  # (B, L + C-1)
        start = self.context_mask.sum(-1)[self.owner].unsqueeze(1)  # (B, 1) position of the first continuation token
        positions = start + torch.arange(n, device=start.device)  # (B, C-1)
        rest, _ = runner.logits(self.targets[:, :n], mask, positions, n, cache=cache, use_cache=True)
        return torch.cat([first, rest], dim=2)


def _padded_targets(seqs: list[Sequence[int]], right_aligned: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuations -> (B, C) token ids padded with PAD_ID (on the left when right_aligned) and their valid mask."""
    C = max(len(s) for s in seqs)
    targets = torch.full((len(seqs), C), PAD_ID, dtype=torch.long)
    valid = torch.zeros((len(seqs), C), dtype=torch.bool)
    for row, s in enumerate(seqs):
        cols = slice(C - len(s), C) if right_aligned else slice(0, len(s))
        targets[row, cols] = torch.tensor(list(s), dtype=torch.long)
        valid[row, cols] = True
    return targets.to(device), valid.to(device)


def _flat_batch(index: list[int], inputs: list[list[int]], continuations, device) -> ScoringBatch:
    ids, mask = _left_pad([inputs[i] for i in index], device)
    return ScoringBatch(index, ids, mask, *_padded_targets([continuations[i] for i in index], True, device))


def _shared_batch(groups: list[list[int]], contexts, continuations, device) -> SharedContextBatch:
    """groups: the request numbers of each context, in context-row order."""
    context_ids, context_mask = _left_pad([contexts[g[0]] for g in groups], device)
    index = [i for g in groups for i in g]
    owner = torch.tensor([q for q, g in enumerate(groups) for _ in g], device=device)
    return SharedContextBatch(index, context_ids, context_mask, owner,
                              *_padded_targets([continuations[i] for i in index], False, device))


def scoring_batches(contexts, continuations, batch_size: int, max_length: int | None, device):
    """Requests -> batches, longest first; truncation from the left as lm-eval's HFLM. The continuations of
    one context (untruncated) share it: SharedContextBatch (batch_size contexts, CONTINUATIONS_PER_CONTEXT x
    batch_size continuations at most); every other request runs alone, batch_size per ScoringBatch. Both score
    the same numbers up to float rounding."""
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    by_context: dict[tuple[int, ...], list[int]] = {}
    inputs = []
    for i, (ctx, cont) in enumerate(zip(contexts, continuations)):
        if not ctx or not cont:
            raise ValueError(f"request {i}: context and continuation must both be non-empty token lists")
        if max_length is not None and len(cont) > max_length:
            raise ValueError(f"request {i}: continuation of {len(cont)} tokens exceeds max_length {max_length}")
        seq = list(ctx) + list(cont)
        if max_length is not None:
            seq = seq[-(max_length + 1):]
        inputs.append(seq[:-1])
        by_context.setdefault(tuple(ctx), []).append(i)
    shared, alone = [], []
    most = CONTINUATIONS_PER_CONTEXT * batch_size  # continuations of one shared batch
    for key, group in by_context.items():
        untruncated = all(len(inputs[i]) == len(key) + len(continuations[i]) - 1 for i in group)
        if len(group) > 1 and untruncated:
            shared += [group[lo:lo + most] for lo in range(0, len(group), most)]
        else:
            alone += group
    shared.sort(key=lambda g: -len(contexts[g[0]]))
    batch: list[list[int]] = []
    for group in shared:
        if batch and (len(batch) == batch_size or sum(map(len, batch)) + len(group) > most):
            yield _shared_batch(batch, contexts, continuations, device)
            batch = []
        batch.append(group)
    if batch:
        yield _shared_batch(batch, contexts, continuations, device)
    alone.sort(key=lambda i: -len(inputs[i]))
    for lo in range(0, len(alone), batch_size):
        yield _flat_batch(alone[lo:lo + batch_size], inputs, continuations, device)


def continuation_logprobs(model, batch: ScoringBatch | SharedContextBatch) -> torch.Tensor:
    """One expert's log-probs at the positions that predict the continuation tokens: (B, C, V) float32."""
    return F.log_softmax(batch.logits(SeparateExperts([model]))[0].float(), dim=-1)


class SeparateExperts:
    """How an Ensemble runs T independent models: one forward and one KV cache per expert.

    An expert runner has two methods, `logits` and `select_rows`; `multilora.LoRAStack` is the other
    one (T LoRA adapters of one base in a single forward).
    """

    def __init__(self, models: Sequence):
        self.models = list(models)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
               logits_to_keep: int, cache: list | None = None, use_cache: bool = False
               ) -> tuple[torch.Tensor, list | None]:
        """(B, L) inputs -> (T, B, logits_to_keep, V) logits, and each expert's KV cache (with use_cache)."""
        outs = [m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=c,
                  use_cache=use_cache, logits_to_keep=logits_to_keep)
                for m, c in zip(self.models, cache or [None] * len(self.models))]
        return torch.stack([o.logits for o in outs]), [o.cache for o in outs] if use_cache else None

    def select_rows(self, cache: list, keep: torch.Tensor, n_rows: int) -> None:
        """Keep rows `keep` (of n_rows) in every expert's cache."""
        for c in cache:
            c.batch_select_indices(keep)


# ---------------------------------------------------------------------------------------------
# the ensemble


@dataclass(frozen=True)
class Generation:
    token_ids: list[int]  # generated tokens, the final EOS included
    text: str  # decoded (special tokens skipped), cut before the first stop string
    finish: str  # "eos", "stop" or "length"


class Ensemble:
    """Token-level ensemble of causal LMs that share one tokenizer (and so one vocabulary).

    `experts` are the models one by one (what per-expert scoring runs); `runner` is how all of them run
    together: SeparateExperts(experts) by default, a multilora.LoRAStack for adapters of one base.
    """

    def __init__(self, experts: Sequence, weights: Sequence[float], combine: str, tokenizer, runner=None):
        if len(experts) != len(weights):
            raise UserError(f"{len(experts)} experts but {len(weights)} weights")
        sizes = {m.get_output_embeddings().weight.shape[0] for m in experts}
        if len(sizes) != 1:
            raise UserError(f"the experts' vocabularies differ in size ({sorted(sizes)}); a token-level ensemble "
                            f"needs one shared tokenizer")
        self.experts = list(experts)
        self.combine = combine
        self.combiner = COMBINERS.get(combine)
        self.tokenizer = tokenizer
        self.device = model_device(self.experts[0])
        self.weights = normalised_weights(weights).to(self.device)  # (T,)
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(self.experts[0], "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, (list, tuple)) else {gen_eos}
        self.eos_ids = {i for i in eos if i is not None}
        for m in self.experts:
            m.eval()
        self.runner = runner if runner is not None else SeparateExperts(self.experts)

    @classmethod
    def from_pretrained(cls, refs: Sequence[str | Path], weights: Sequence[float], combine: str = "prob",
                        device: str = "auto", dtype: str = "float32") -> "Ensemble":
        """Load experts (checkpoints, LoRA adapters, prepared dirs or hub ids) after checking their tokenizers.

        Two or more LoRA adapters of one base share one copy of it and run in one forward per step
        (multilora.py); anything else loads one model per expert, a lone adapter merged into its base
        (inference only: one matmul per layer instead of the base's plus the adapter's).
        """
        from ensemw2s.models import check_same_tokenizer, load_causal_lm, load_tokenizer, resolve_device
        from ensemw2s.multilora import load_lora_stack

        if not refs:
            raise UserError("an ensemble needs at least one expert")
        check_same_tokenizer(list(refs))
        dev = resolve_device(device)
        tokenizer = load_tokenizer(refs[0])
        stack = load_lora_stack(refs, dtype=dtype, device=dev) if len(refs) > 1 else None
        if stack is not None:
            return cls(stack.experts, weights, combine, tokenizer, runner=stack)
        experts = [load_causal_lm(r, dtype=dtype, device=dev, merge_adapter=True) for r in refs]
        return cls(experts, weights, combine, tokenizer)

    # -- one step, without a cache (the reference the cached paths are tested against)

    def _expert_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded -> (T, B, V) each expert's next-token log-probs."""
        if not bool(attention_mask[:, -1].all()):
            raise ValueError("next-token scoring needs left-padded inputs (the last column is padding)")
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        logits, _ = self.runner.logits(input_ids, attention_mask, _positions(attention_mask), 1)  # (T, B, 1, V)
        return F.log_softmax(logits[:, :, -1].float(), dim=-1)

    @torch.no_grad()
    def next_token_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The ensemble's next-token log-probs after left-padded (B, L) inputs: (B, V)."""
        return self.combiner.combine(self._expert_logprobs(input_ids, attention_mask), self.weights)

    @torch.no_grad()
    def next_token(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The ensemble's greedy next token after left-padded (B, L) inputs: (B,)."""
        lp = self._expert_logprobs(input_ids, attention_mask)  # (T, B, V)
        return self.combiner.choose(lp, self.weights, self.combiner.combine(lp, self.weights))

    # -- scoring

    @torch.no_grad()
    def loglikelihood(self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], *,
                      batch_size: int = 16, max_length: int | None = None) -> list[tuple[float, bool]]:
        """Per request (token lists): (sum of log p_ens over the continuation tokens, is it the greedy path).

        `max_length` truncates context + continuation from the left as lm-eval's HFLM does.
        """
        out: list[tuple[float, bool] | None] = [None] * len(contexts)
        for batch in scoring_batches(contexts, continuations, batch_size, max_length, self.device):
            lp = F.log_softmax(batch.logits(self.runner).float(), dim=-1)  # (T, B, C, V)
            combined = self.combiner.combine(lp, self.weights)  # (B, C, V)
            chosen = self.combiner.choose(lp, self.weights, combined)  # (B, C)
            target = combined.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)  # (B, C)
            sums = target.double().masked_fill(~batch.valid, 0).sum(-1)  # (B,)
            greedy = ((chosen == batch.targets) | ~batch.valid).all(-1)  # (B,)
            for i, s, g in zip(batch.index, sums.tolist(), greedy.tolist()):
                out[i] = (s, g)
        return out

    # -- greedy decoding with one KV cache per expert

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        return self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str | Sequence[int]], max_new_tokens: int, stop: Sequence[str] = (), *,
                 batch_size: int = 16) -> list[Generation]:
        """Greedy decoding of each prompt (text or token ids), batched longest first; results in input order.

        A sequence ends at EOS, at a stop string, or after max_new_tokens tokens.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        stop = [s for s in stop if s]  # an empty stop string would end every sequence at once
        ids = [self.encode(p) for p in prompts]
        if any(not s for s in ids):
            raise ValueError("cannot decode from an empty prompt")
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[Generation | None] = [None] * len(ids)
        for lo in range(0, len(order), batch_size):
            chunk = order[lo:lo + batch_size]
            for i, g in zip(chunk, self._generate_batch([ids[i] for i in chunk], max_new_tokens, stop)):
                out[i] = g
        return out

    def _stop_window(self, stop: list[str]) -> int:
        """Tokens to decode for the stop check (lm-eval's rule: the stop string's length + 2)."""
        return max(len(self.tokenizer.encode(s, add_special_tokens=False)) for s in stop) + 2

    def _finish(self, tokens: list[int], reason: str, stop: list[str]) -> Generation:
        body = tokens[:-1] if reason == "eos" else tokens
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        cuts = [text.find(s) for s in stop if s in text]
        return Generation(tokens, text[:min(cuts)] if cuts else text, reason)

    def _generate_batch(self, seqs: list[list[int]], max_new_tokens: int, stop: list[str]) -> list[Generation]:
        input_ids, mask = _left_pad(seqs, self.device)  # (B, L)
        pos = _positions(mask)
        # prefill: only the last position's logits are needed
        logits, cache = self.runner.logits(input_ids, mask, pos, 1, use_cache=True)  # (T, B, 1, V)
        next_pos = pos[:, -1] + 1  # (B,)
        window = self._stop_window(stop) if stop else 0
        rows = list(range(len(seqs)))  # batch row -> sequence number
        tokens: list[list[int]] = [[] for _ in seqs]
        done: list[Generation | None] = [None] * len(seqs)
        for step in range(max_new_tokens):
            lp = F.log_softmax(logits[:, :, -1].float(), dim=-1)  # (T, B, V)
            chosen = self.combiner.choose(lp, self.weights, self.combiner.combine(lp, self.weights))  # (B,)
            keep = []
            for j, (r, tok) in enumerate(zip(rows, chosen.tolist())):  # the one host sync per step
                tokens[r].append(tok)
                if tok in self.eos_ids:
                    done[r] = self._finish(tokens[r], "eos", stop)
                elif window and any(s in self.tokenizer.decode(tokens[r][-window:]) for s in stop):
                    done[r] = self._finish(tokens[r], "stop", stop)
                elif step == max_new_tokens - 1:
                    done[r] = self._finish(tokens[r], "length", stop)
                else:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(rows):  # finished sequences leave the batch and the caches
                idx = torch.tensor(keep, device=self.device)
                chosen, mask, next_pos = chosen[idx], mask[idx], next_pos[idx]
                self.runner.select_rows(cache, idx, len(rows))
                rows = [rows[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)  # (B, L + step + 1)
            logits, cache = self.runner.logits(chosen.unsqueeze(1), mask, next_pos.unsqueeze(1), 1, cache=cache,
                                               use_cache=True)  # (T, B, 1, V)
            next_pos = next_pos + 1
        return done


def load_ensemble(manifest_path: str | Path, device: str = "auto", dtype: str = "float32") -> Ensemble:
    """The Ensemble a manifest describes (its experts loaded onto `device`)."""
    from ensemw2s.models import tokenizer_fingerprint

    m = read_manifest(manifest_path)
    ens = Ensemble.from_pretrained(m["experts"], m["weights"], m["combine"], device=device, dtype=dtype)
    if tokenizer_fingerprint(ens.tokenizer) != m["tokenizer"]:
        raise UserError(f"{manifest_path}: the experts' tokenizer changed since the manifest was written; "
                        f"rerun `ensemw2s ensemble`")
    return ens
