# Hub models are downloaded once, on the submitting node; models are materialised once (tiny: built +
# pretrained; gguf: converted; hub: a pointer to the fetched copy; path: a pointer); each dataset is
# rated once, after every rater of its difficulty panel is prepared, and split once per seed from that rating.
from ensemw2s.strategies import annotation_file


localrules:
    fetch_model,
    fetch_dataset,


rule fetch_model:
    output:
        directory(fetched_model("{model}")),
    params:
        h=lambda w: step_hash("fetch_model", model=w.model),
    log:
        log("hub/models/{model}"),
    shell:
        f"{EW_ONLINE} fetch --config {CFG} --model {{wildcards.model}} --out {{output}} > {{log}} 2>&1"


rule fetch_dataset:
    output:
        directory(fetched_dataset("{dataset}")),
    params:
        h=lambda w: step_hash("fetch_dataset", dataset=w.dataset),
    log:
        log("hub/datasets/{dataset}"),
    shell:
        f"{EW_ONLINE} fetch --config {CFG} --dataset {{wildcards.dataset}} --out {{output}} > {{log}} 2>&1"


def fetched_input(wildcards):
    """A hub model's fetched copy (none for tiny, gguf and path models)."""
    return [fetched_model(wildcards.model)] if C.model(wildcards.model).source == "hub" else []


def rater_models(wildcards):
    """Rater name -> its prepared checkpoint, for each rater of the panel of a strategy that needs raters."""
    difficulty = C.dataset(wildcards.dataset).difficulty
    needs_rater = STRATEGIES.get(difficulty.strategy).needs_rater
    return {name: f"{RUN}/models/{name}" for name in difficulty.raters} if needs_rater else {}


def rater_args(wildcards):
    """rate-data's `--rater-model NAME=PATH`, once per rater of the panel."""
    return " ".join(f"--rater-model {shlex.quote(f'{name}={path}')}" for name, path in rater_models(wildcards).items())


def annotation_input(wildcards):
    """The `annotation` strategy's file: the dataset is rated again when it is edited."""
    difficulty = C.dataset(wildcards.dataset).difficulty
    needs = STRATEGIES.get(difficulty.strategy).needs == "annotation"
    return [str(annotation_file(difficulty.annotation, C.data_dir))] if needs else []


rule prepare_model:
    input:
        fetched=fetched_input,
    output:
        directory(f"{RUN}/models/{{model}}"),
    params:
        h=lambda w: step_hash("prepare_model", model=w.model),
        fetched=lambda w, input: f"--fetched {input.fetched}" if input.fetched else "",
    log:
        log("models/{model}"),
    benchmark:
        bench("models/{model}")
    threads: threads("prepare_model")
    resources:
        **res("prepare_model"),
    shell:
        f"{EW} prepare-model --config {CFG} --model {{wildcards.model}} {{params.fetched}} --out {{output}}"
        f" > {{log}} 2>&1"


def definition_file(wildcards):
    """The dataset's definition: the dataset is rated and split again when it is edited."""
    return str(catalog.definition(wildcards.dataset, C.dataset(wildcards.dataset).definition).path)


def fetched_data(wildcards):
    """A `load_from: hub` dataset's fetched copy (none for local and generated rows)."""
    spec = C.dataset(wildcards.dataset)
    hub = spec.load_from == "hub" and not catalog.definition(wildcards.dataset, spec.definition).generator
    return [fetched_dataset(wildcards.dataset)] if hub else []


rule rate_data:
    input:
        rater=lambda w: list(rater_models(w).values()),
        annotations=annotation_input,
        definition=definition_file,
        fetched=fetched_data,
    output:
        directory(ratings_dir("{dataset}")),
    params:
        h=lambda w: step_hash("rate_data", dataset=w.dataset),
        rater=rater_args,
        fetched=lambda w, input: f"--fetched {input.fetched}" if input.fetched else "",
    log:
        log("ratings/{dataset}"),
    benchmark:
        bench("ratings/{dataset}")
    threads: threads("rate_data")
    resources:
        **res("rate_data"),
    shell:
        f"{EW} rate-data --config {CFG} --dataset {{wildcards.dataset}} {{params.rater}} {{params.fetched}}"
        f" --out {{output}} > {{log}} 2>&1"


rule prepare_data:
    input:
        ratings=ratings_dir("{dataset}"),
        definition=definition_file,
    output:
        directory(split_dir("{dataset}", "{seed}")),
    params:
        h=lambda w: step_hash("prepare_data", dataset=w.dataset),
    log:
        log("data/{dataset}_s{seed}"),
    benchmark:
        bench("data/{dataset}_s{seed}")
    threads: threads("prepare_data")
    resources:
        **res("prepare_data"),
    shell:
        f"{EW} prepare-data --config {CFG} --dataset {{wildcards.dataset}} --seed {{wildcards.seed}}"
        f" --ratings {{input.ratings}} --out {{output}} > {{log}} 2>&1"
