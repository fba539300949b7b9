# Models are materialised once (tiny: built + pretrained; gguf: converted; hub/path: a pointer),
# and each dataset is split once per seed.


def rater_input(wildcards):
    rater = C.dataset(wildcards.dataset).difficulty.rater
    strategy = C.dataset(wildcards.dataset).difficulty.strategy
    return [f"{RUN}/models/{rater}"] if strategy == "model" else []


rule prepare_model:
    output:
        directory(f"{RUN}/models/{{model}}"),
    params:
        h=lambda w: prepared_model_hash(w.model),
    log:
        log("models/{model}"),
    benchmark:
        bench("models/{model}")
    threads: threads("prepare_model")
    resources:
        **res("prepare_model"),
    shell:
        f"{EW} prepare-model --config {CFG} --model {{wildcards.model}} --out {{output}} > {{log}} 2>&1"


rule prepare_data:
    input:
        rater=rater_input,
    output:
        directory(f"{RUN}/data/{{dataset}}/s{{seed}}"),
    params:
        h=lambda w: dataset_hash(w.dataset),
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
