# The ensemble of the first r experts (a manifest), and its greedy answers for student_pool (and for val,
# which its students select their epoch on when training.student.select_on_val is set).


def ensemble_experts(wildcards):
    variant = C.boosting.variant(wildcards.ensemble).experts
    return [expert_dir(wildcards.weak, wildcards.dataset, wildcards.seed, variant, r) for r in range(1, int(wildcards.r) + 1)]


rule ensemble_manifest:
    input:
        ensemble_experts,
    output:
        manifest("{weak}", "{dataset}", "{seed}", "{ensemble}", "{r}"),
    params:
        h=lambda w: step_hash("ensemble_manifest", variant=w.ensemble),
    log:
        log("ensembles/{weak}_{dataset}_s{seed}_{ensemble}_r{r}"),
    threads: threads("ensemble_manifest")
    resources:
        **res("ensemble_manifest"),
    shell:
        f"{EW} ensemble --config {CFG} --experts {{input}} --variant {{wildcards.ensemble}} --out {{output}} > {{log}} 2>&1"


rule pseudo_label:
    input:
        manifest=manifest("{weak}", "{dataset}", "{seed}", "{ensemble}", "{r}"),
        data=split_dir("{dataset}", "{seed}"),
    output:
        labels=pseudo("{weak}", "{dataset}", "{seed}", "{ensemble}", "{r}"),
        meta=pseudo("{weak}", "{dataset}", "{seed}", "{ensemble}", "{r}") + ".meta.json",
        **({"val": pseudo_val("{weak}", "{dataset}", "{seed}", "{ensemble}", "{r}")} if STUDENT_SELECTS else {}),
    params:
        h=lambda w: step_hash("pseudo_label"),
        val=lambda w, output: f"--val-out {output.val}" if STUDENT_SELECTS else "",
    log:
        log("pseudo/{weak}_{dataset}_s{seed}_{ensemble}_r{r}"),
    benchmark:
        bench("pseudo/{weak}_{dataset}_s{seed}_{ensemble}_r{r}")
    threads: threads("pseudo_label")
    resources:
        **res("pseudo_label"),
    shell:
        f"{EW} pseudo-label --config {CFG} --manifest {{input.manifest}} --data {{input.data}} --out {{output.labels}}"
        f" {{params.val}} > {{log}} 2>&1"
