# Models are materialised once (tiny: built + pretrained; gguf: converted; hub/path: a pointer),
# and each dataset is split once per seed.


def rater_input(wildcards):
    """The prepared rater checkpoint, for a difficulty strategy that needs one."""
    difficulty = C.dataset(wildcards.dataset).difficulty
    return [f"{RUN}/models/{difficulty.rater}"] if STRATEGIES.get(difficulty.strategy).needs_rater else []


rule prepare_model:
    output:
        directory(f"{RUN}/models/{{model}}"),
    params:
        h=lambda w: step_hash("prepare_model", model=w.model),
    log:
        log("models/{model}"),
    benchmark:
        bench("models/{model}")
    threads: threads("prepare_model")
    resources:
        **res("prepare_model"),
    shell:
        f"{EW} prepare-model --config {CFG} --model {{wildcards.model}} --out {{output}} > {{log}} 2>&1"


def definition_file(wildcards):
    """The dataset's definition: splits are made again when it is edited."""
    return str(catalog.definition(wildcards.dataset, C.dataset(wildcards.dataset).definition).path)


rule prepare_data:
    input:
        rater=rater_input,
        definition=definition_file,
    output:
        directory(split_dir("{dataset}", "{seed}")),
    params:
        h=lambda w: step_hash("prepare_data", dataset=w.dataset),
        rater=lambda w, input: f"--rater-model {input.rater}" if input.rater else "",
    log:
        log("data/{dataset}_s{seed}"),
    benchmark:
        bench("data/{dataset}_s{seed}")
    threads: threads("prepare_data")
    resources:
        **res("prepare_data"),
    shell:
        f"{EW} prepare-data --config {CFG} --dataset {{wildcards.dataset}} --seed {{wildcards.seed}}"
        f" {{params.rater}} --out {{output}} > {{log}} 2>&1"
