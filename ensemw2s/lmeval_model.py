"""The lm-eval model `ensemw2s`: a token-level ensemble (ensemble.py) behind lm-eval's LM interface.

    import ensemw2s, lm_eval
    lm_eval.simple_evaluate(model="ensemw2s", model_args="experts=DIR1|DIR2,weights=0.9|0.4,combine=prob", ...)
    lm_eval.simple_evaluate(model="ensemw2s", model_args="manifest=r2.json,cache=CACHE_DIR", ...)

lm-eval's `model_args` string splits on commas, so lists are given with `|`. Tokenisation, truncation,
empty contexts, rolling windows, stop sequences and post-processing follow lm-eval's own HFLM line by
line (lm_eval/models/huggingface.py, 0.4.13), so an ensemble of one expert scores exactly as
`HFLM(pretrained=expert)` does. With `cache=DIR`, log-likelihoods are combined from per-expert token
caches (token_cache.TokenCache, one file per expert and request list in DIR), so scoring the ensembles of
rounds 1..R runs each expert once. `import ensemw2s` registers the name lazily (ensemw2s/__init__.py);
this module is imported only when lm-eval asks for the model.

On the command line: `ensemw2s lm-eval ARGS` is lm-eval's own CLI (`lm-eval ARGS`) with the model
registered (`run_lm_eval_cli`). A bare `lm_eval --model ensemw2s` fails with lm-eval 0.4.13: its CLI
imports only its own models and reads no plugin entry points. Releases that discover plugins read the
`lm_eval.models` entry point declared in pyproject.toml instead.
"""
from __future__ import annotations

import json
import sys

from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    _add_special_kwargs,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
    resolve_max_length,
)

from ensemw2s.ensemble import Ensemble, load_ensemble
from ensemw2s.errors import UserError
from ensemw2s.kinds import COMBINERS
from ensemw2s.manifest import read_manifest
from ensemw2s.token_cache import cached_expert_scores, combine_cached

DEFAULT_MAX_GEN_TOKS = 256  # HFLM's


def _as_list(value, name: str) -> list:
    """A list, a tuple, a `|`-separated string or a single value (lm-eval parses `1` as an int) -> list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        items = [v.strip() for v in value.split("|")]
        if not all(items):
            raise UserError(f"model_args {name}={value!r}: empty item in the |-separated list")
        return items
    return [value]


@register_model("ensemw2s")
class EnsembleLM(TemplateLM):
    """lm-eval's view of an Ensemble. Give `experts` (+ `weights`, `combine`) or a `manifest`; `cache` is
    a directory of per-expert token caches (not usable with `combine=logprob`, which is scored directly)."""

    def __init__(self, experts=None, weights=None, combine: str = "prob", manifest: str | None = None,
                 cache: str | None = None, batch_size: int | str = 16, device: str = "auto",
                 max_length: int | None = None, dtype: str = "float32", add_bos_token: bool | None = None) -> None:
        super().__init__()
        if (manifest is None) == (experts is None):
            raise UserError("model ensemw2s: give either experts=PATH|PATH... (with weights=...) or manifest=PATH")
        if not isinstance(batch_size, int) and not str(batch_size).isdigit():
            raise UserError(f"model ensemw2s: batch_size must be an integer, got {batch_size!r} (no auto-detection)")
        if manifest is not None:
            m = read_manifest(manifest)
            experts, weights, combine = m["experts"], m["weights"], m["combine"]
            self.ensemble = load_ensemble(manifest, device=device, dtype=dtype)
        else:
            experts = _as_list(experts, "experts")
            weights = [float(w) for w in _as_list(weights, "weights")] or [1.0] * len(experts)
            self.ensemble = Ensemble.from_pretrained(experts, weights, combine, device=device, dtype=dtype)
        self.tokenizer = self.ensemble.tokenizer
        self._device = self.ensemble.device
        self._batch_size = int(batch_size)
        self._max_length = max_length
        self.add_bos_token = add_bos_token
        self.experts = [str(e) for e in experts]
        self.weights = weights
        # logprob renormalises over the whole vocabulary: a per-token cache cannot serve it
        self.cache = cache if COMBINERS.get(combine).from_cache is not None else None

    # -- the properties and tokenisation HFLM has

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length or resolve_max_length(self.ensemble.experts[0].config, self.tokenizer)

    @property
    def max_gen_toks(self) -> int:
        return DEFAULT_MAX_GEN_TOKS

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def get_model_info(self) -> dict:
        return {"experts": self.experts, "weights": self.weights, "combine": self.ensemble.combine}

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs) -> list[int]:
        special = _add_special_kwargs(add_special_tokens, self.add_bos_token)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        enc = self.tokenizer.encode(string, **special)
        return enc[-left_truncate_len:] if left_truncate_len else enc

    def _generation_encode(self, string: str, left_truncate_len: int) -> list[int]:
        """HFLM.tok_batch_encode's rule for one string: no special tokens when it already starts with BOS."""
        if has_bos_prefix(string, getattr(self.tokenizer, "bos_token", None)):
            special = {"add_special_tokens": False}
        elif self.add_bos_token is not None:
            special = {"add_special_tokens": self.add_bos_token}
        else:
            special = {}
        return self.tokenizer.encode(string, **special)[-left_truncate_len:]

    # -- requests

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: ((context, continuation) or None, context tokens, continuation tokens)."""
        if not requests:
            return []
        keys, contexts, continuations = zip(*requests)
        if self.cache is None:
            res = self.ensemble.loglikelihood(contexts, continuations, batch_size=self.batch_size,
                                              max_length=self.max_length)
        else:
            caches = [cached_expert_scores(model, ref, contexts, continuations, self.cache, batch_size=self.batch_size,
                                           max_length=self.max_length)
                      for model, ref in zip(self.ensemble.experts, self.experts)]
            res = combine_cached(caches, self.weights, self.ensemble.combine)
        for key, answer in zip(keys, res):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return res

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Perplexity windows exactly as HFLM cuts them, each scored as one loglikelihood request."""
        windows, owner = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (lp, _) in zip(owner, self._loglikelihood_tokens(windows)):
            totals[i] += lp
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy ensemble decoding; requests with equal generation kwargs are decoded together."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        out: list[str | None] = [None] * len(requests)
        for index in groups.values():
            kwargs = normalize_gen_kwargs(requests[index[0]].args[1], self.max_gen_toks)
            if kwargs.get("do_sample"):
                raise UserError("model ensemw2s decodes greedily; set do_sample=false (temperature 0) in the task")
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = kwargs.pop("max_gen_toks")
            max_ctx_len = self.max_length - max_gen_toks
            if max_ctx_len <= 0:
                raise UserError(f"max_gen_toks {max_gen_toks} leaves no room for a prompt within max_length "
                                f"{self.max_length}")
            prompts = [self._generation_encode(requests[i].args[0], max_ctx_len) for i in index]
            gens = self.ensemble.generate(prompts, max_gen_toks, stop=until, batch_size=self.batch_size)
            for i, g in zip(index, gens):
                text = self.tokenizer.decode(g.token_ids, skip_special_tokens=True)
                out[i] = postprocess_generated_text(text, until, None)
                self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
        return out


def run_lm_eval_cli(argv: list[str]) -> None:
    """Run lm-eval's CLI entry (`lm_eval.__main__.cli_evaluate`) on `argv` in this process, where
    `import ensemw2s` has registered the model. lm-eval parses `sys.argv` itself, so it is set for the call."""
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
