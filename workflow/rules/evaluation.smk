# Every model, expert, ensemble and student is scored by the same local lm-eval tasks (val, test_id,
# test_ood of its dataset and seed): one rule, the subject's path says what it scores (common.smk SCORED).


rule evaluate:
    input:
        data=split_dir("{dataset}", "{seed}"),
        scored=lambda w: scored(w)[0],
    output:
        score_file("{dataset}", "{seed}", "{role}", "{subject}"),
    wildcard_constraints:
        subject=r"[^/]+(/[^/]+/r\d+)?",
    params:
        what=lambda w: scored(w)[1],
        meta=lambda w: f"role={w.role} {scored(w)[2]} dataset={w.dataset} seed={w.seed}",
        h=lambda w: step_hash("evaluate"),
    log:
        log("scores/{dataset}_s{seed}_{role}/{subject}"),
    benchmark:
        bench("scores/{dataset}_s{seed}_{role}/{subject}")
    threads: threads("evaluate")
    resources:
        **res("evaluate"),
    shell:
        f"{EW} evaluate --config {CFG} --dataset {{wildcards.dataset}} --data {{input.data}} {{params.what}}"
        f" --meta {{params.meta}} --out {{output}} > {{log}} 2>&1"
