# metrics.csv from every score file, the run's provenance, and one rule per table and figure.

rule metrics:
    input:
        scores=score_files(),
        experts=expert_dirs(),
        pseudo=pseudo_meta_files(),
    output:
        report(f"{RUN}/metrics.csv", category="Results", caption="../report/metrics.rst"),
    params:
        boosting=lambda w, input: " ".join(f"{d}/boosting.json" for d in input.experts),
        h=lambda w: step_hash("metrics"),
    log:
        log("report/metrics"),
    threads: threads("report")
    resources:
        **res("report"),
    shell:
        f"{EW} metrics --config {CFG} --scores {{input.scores}} --boosting {{params.boosting}}"
        f" --pseudo {{input.pseudo}} --out {{output}} > {{log}} 2>&1"


rule go_no_go:
    input:
        weak_base=lambda w: score_file(w.dataset, GATE_SEED, "weak_base", w.weak),
        strong_base=lambda w: score_file(w.dataset, GATE_SEED, "strong_base", w.strong),
        h1=lambda w: score_file(w.dataset, GATE_SEED, "expert", f"{w.weak}/{METHOD}/r1"),
        ceiling=lambda w: score_file(w.dataset, GATE_SEED, "ceiling", w.strong),
    output:
        go_no_go_file("{dataset}", "{weak}", "{strong}"),
    log:
        log("report/go_no_go_{dataset}_{weak}__{strong}"),
    threads: threads("report")
    resources:
        **res("report"),
    shell:
        f"{EW} go-no-go --config {CFG} --scores {{input}} --out {{output}} > {{log}} 2>&1"


rule gate:  # `snakemake gate --cores N ...`: the first seed's bases, h_1 and ceiling, and each pair's go / no-go
    input:
        go_no_go_files(),


rule provenance:
    input:
        metrics=f"{RUN}/metrics.csv",
    output:
        f"{RUN}/provenance.json",
    params:
        records=RUN,  # searched at run time for *.provenance.json records and benchmark TSVs
    log:
        log("report/provenance"),
    threads: threads("report")
    resources:
        **res("report"),
    shell:
        f"{EW} provenance --config {CFG} --records {{params.records}} --out {{output}} > {{log}} 2>&1"


rule table:
    input:
        metrics=f"{RUN}/metrics.csv",
        experts=expert_dirs(),
    output:
        csv=report(f"{RUN}/tables/{{table}}.csv", category="Tables", caption="../report/table.rst"),
        md=f"{RUN}/tables/{{table}}.md",
        tex=f"{RUN}/tables/{{table}}.tex",
    wildcard_constraints:
        table="|".join(TABLES),
    params:
        boosting=lambda w, input: " ".join(f"{d}/boosting.json" for d in input.experts),
    log:
        log("report/table_{table}"),
    threads: threads("report")
    resources:
        **res("report"),
    shell:
        f"{EW} report --config {CFG} --name {{wildcards.table}} --metrics {{input.metrics}}"
        f" --boosting {{params.boosting}} --out {RUN}/tables/{{wildcards.table}} > {{log}} 2>&1"


rule figure:
    input:
        metrics=f"{RUN}/metrics.csv",
        experts=expert_dirs(),
    output:
        png=report(f"{RUN}/figures/{{figure}}.png", category="Figures", caption="../report/figure.rst"),
        pdf=f"{RUN}/figures/{{figure}}.pdf",
    wildcard_constraints:
        figure="|".join(FIGURES),
    params:
        boosting=lambda w, input: " ".join(f"{d}/boosting.json" for d in input.experts),
    log:
        log("report/figure_{figure}"),
    threads: threads("report")
    resources:
        **res("report"),
    shell:
        f"{EW} report --config {CFG} --name {{wildcards.figure}} --metrics {{input.metrics}}"
        f" --boosting {{params.boosting}} --out {RUN}/figures/{{wildcards.figure}} > {{log}} 2>&1"
