# Every model is scored by the same local lm-eval tasks (val, test_id, test_ood of its dataset/seed).
SCORES = f"{RUN}/scores/{{dataset}}/s{{seed}}"
EVAL_SHELL = (
    f"{EW} evaluate --config {CFG} --dataset {{wildcards.dataset}} --data {{input.data}} {{params.what}}"
    f" --meta {{params.meta}} dataset={{wildcards.dataset}} seed={{wildcards.seed}} --out {{output}} > {{log}} 2>&1"
)
EVAL_HASH = lambda w: eval_hash()


rule evaluate_base:
    input:
        data=f"{RUN}/data/{{dataset}}/s{{seed}}",
        model=f"{RUN}/models/{{model}}",
    output:
        f"{SCORES}/{{role}}/{{model}}.json",
    wildcard_constraints:
        role="weak_base|strong_base",
    params:
        what=lambda w, input: f"--model {input.model}",
        meta=lambda w: f"role={w.role} {'weak' if w.role == 'weak_base' else 'strong'}_model={w.model} round=0",
        h=EVAL_HASH,
    log:
        log("scores/{dataset}_s{seed}_{role}_{model}"),
    benchmark:
        bench("scores/{dataset}_s{seed}_{role}_{model}")
    threads: threads("evaluate")
    resources:
        **res("evaluate"),
    shell:
        EVAL_SHELL


rule evaluate_expert:
    input:
        data=f"{RUN}/data/{{dataset}}/s{{seed}}",
        expert=expert_dir("{weak}", "{dataset}", "{seed}", "{variant}", "{r}"),
    output:
        f"{SCORES}/expert/{{weak}}/{{variant}}/r{{r}}.json",
    params:
        what=lambda w, input: f"--model {input.expert}",
        meta=lambda w: f"role=expert weak_model={w.weak} ensemble={w.variant} round={w.r}",
        h=EVAL_HASH,
    log:
        log("scores/{dataset}_s{seed}_expert_{weak}_{variant}_r{r}"),
    benchmark:
        bench("scores/{dataset}_s{seed}_expert_{weak}_{variant}_r{r}")
    threads: threads("evaluate")
    resources:
        **res("evaluate"),
    shell:
        EVAL_SHELL


rule evaluate_ensemble:
    input:
        data=f"{RUN}/data/{{dataset}}/s{{seed}}",
        manifest=manifest("{weak}", "{dataset}", "{seed}", "{ensemble}", "{r}"),
    output:
        f"{SCORES}/ensemble/{{weak}}/{{ensemble}}/r{{r}}.json",
    params:
        what=lambda w, input: f"--manifest {input.manifest} --cache {RUN}/cache/{w.dataset}/s{w.seed}",
        meta=lambda w: f"role=ensemble weak_model={w.weak} ensemble={w.ensemble} round={w.r}",
        h=EVAL_HASH,
    log:
        log("scores/{dataset}_s{seed}_ensemble_{weak}_{ensemble}_r{r}"),
    benchmark:
        bench("scores/{dataset}_s{seed}_ensemble_{weak}_{ensemble}_r{r}")
    threads: threads("evaluate")
    resources:
        **res("evaluate"),
    shell:
        EVAL_SHELL


rule evaluate_student:
    input:
        data=f"{RUN}/data/{{dataset}}/s{{seed}}",
        model=student_dir("{weak}", "{strong}", "{dataset}", "{seed}", "{ensemble}", "{r}"),
    output:
        f"{SCORES}/student/{{weak}}__{{strong}}/{{ensemble}}/r{{r}}.json",
    params:
        what=lambda w, input: f"--model {input.model}/model",
        meta=lambda w: f"role=student weak_model={w.weak} strong_model={w.strong} ensemble={w.ensemble} round={w.r}",
        h=EVAL_HASH,
    log:
        log("scores/{dataset}_s{seed}_student_{weak}__{strong}_{ensemble}_r{r}"),
    benchmark:
        bench("scores/{dataset}_s{seed}_student_{weak}__{strong}_{ensemble}_r{r}")
    threads: threads("evaluate")
    resources:
        **res("evaluate"),
    shell:
        EVAL_SHELL


rule evaluate_ceiling:
    input:
        data=f"{RUN}/data/{{dataset}}/s{{seed}}",
        model=ceiling_dir("{strong}", "{dataset}", "{seed}"),
    output:
        f"{SCORES}/ceiling/{{strong}}.json",
    params:
        what=lambda w, input: f"--model {input.model}/model",
        meta=lambda w: f"role=ceiling strong_model={w.strong} round=0",
        h=EVAL_HASH,
    log:
        log("scores/{dataset}_s{seed}_ceiling_{strong}"),
    benchmark:
        bench("scores/{dataset}_s{seed}_ceiling_{strong}")
    threads: threads("evaluate")
    resources:
        **res("evaluate"),
    shell:
        EVAL_SHELL
