# Boosting rounds: round r trains from the weak base with the token weights left by round r-1.


def previous_expert(wildcards):
    r = int(wildcards.r)
    if r == 1:
        return []
    return [expert_dir(wildcards.weak, wildcards.dataset, wildcards.seed, wildcards.variant, r - 1)]


rule train_expert:
    input:
        data=split_dir("{dataset}", "{seed}"),
        base=f"{RUN}/models/{{weak}}",
        prev=previous_expert,
    output:
        directory(expert_dir("{weak}", "{dataset}", "{seed}", "{variant}", "{r}")),
    params:
        h=lambda w: step_hash("train_expert", weak=w.weak, variant=w.variant),
        prev=lambda w, input: f"--prev {input.prev}" if input.prev else "",
    log:
        log("experts/{weak}_{dataset}_s{seed}_{variant}_r{r}"),
    benchmark:
        bench("experts/{weak}_{dataset}_s{seed}_{variant}_r{r}")
    threads: threads("train_expert")
    resources:
        **res("train_expert"),
    shell:
        f"{EW} train-expert --config {CFG} --weak {{wildcards.weak}} --dataset {{wildcards.dataset}}"
        f" --seed {{wildcards.seed}} --variant {{wildcards.variant}} --round {{wildcards.r}}"
        f" --data {{input.data}} --base {{input.base}} {{params.prev}} --out {{output}} > {{log}} 2>&1"
