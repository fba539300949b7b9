# Students learn from the ensemble of the first r experts, and select their epoch on its val answers;
# the ceiling learns from student_pool's gold answers and selects on gold val.
# With resources.train_student.gpu N > 1 the CLI trains on N processes (torchrun, Trainer's DDP).
STUDENT_GPUS = res("train_student")["gpu"]
PROCESSES = f" --processes {STUDENT_GPUS}" if STUDENT_GPUS > 1 else ""


rule train_student:
    input:
        labels=pseudo("{weak}", "{dataset}", "{seed}", "{ensemble}", "{r}"),
        **({"val": pseudo_val("{weak}", "{dataset}", "{seed}", "{ensemble}", "{r}")} if STUDENT_SELECTS else {}),
        data=split_dir("{dataset}", "{seed}"),
        base=f"{RUN}/models/{{strong}}",
    output:
        directory(student_dir("{weak}", "{strong}", "{dataset}", "{seed}", "{ensemble}", "{r}")),
    params:
        h=lambda w: step_hash("train_student", strong=w.strong),
        val=lambda w, input: f"--val-labels {input.val}" if STUDENT_SELECTS else "",
    log:
        log("students/{weak}__{strong}_{dataset}_s{seed}_{ensemble}_r{r}"),
    benchmark:
        bench("students/{weak}__{strong}_{dataset}_s{seed}_{ensemble}_r{r}")
    threads: threads("train_student")
    resources:
        **res("train_student"),
    shell:
        f"{EW} train-student{PROCESSES} --config {CFG} --strong {{wildcards.strong}} --seed {{wildcards.seed}}"
        f" --data {{input.data}} --base {{input.base}} --labels {{input.labels}}"
        f" {{params.val}} --out {{output}} > {{log}} 2>&1"


# The A/A control (evaluation.aa_replicate): the student of the same supervisor and labels, trained with
# another seed (--replicate 1: only the training seed differs); the targets ask for METHOD's r = 1 only.
rule train_replicate:
    input:
        labels=pseudo("{weak}", "{dataset}", "{seed}", "{ensemble}", "{r}"),
        **({"val": pseudo_val("{weak}", "{dataset}", "{seed}", "{ensemble}", "{r}")} if STUDENT_SELECTS else {}),
        data=split_dir("{dataset}", "{seed}"),
        base=f"{RUN}/models/{{strong}}",
    output:
        directory(replicate_dir("{weak}", "{strong}", "{dataset}", "{seed}", "{ensemble}", "{r}")),
    params:
        h=lambda w: step_hash("train_student", strong=w.strong),
        val=lambda w, input: f"--val-labels {input.val}" if STUDENT_SELECTS else "",
    log:
        log("replicates/{weak}__{strong}_{dataset}_s{seed}_{ensemble}_r{r}"),
    benchmark:
        bench("replicates/{weak}__{strong}_{dataset}_s{seed}_{ensemble}_r{r}")
    threads: threads("train_student")
    resources:
        **res("train_student"),
    shell:
        f"{EW} train-student{PROCESSES} --config {CFG} --strong {{wildcards.strong}} --seed {{wildcards.seed}}"
        f" --data {{input.data}} --base {{input.base}} --labels {{input.labels}} --replicate 1"
        f" {{params.val}} --out {{output}} > {{log}} 2>&1"


rule train_ceiling:
    input:
        data=split_dir("{dataset}", "{seed}"),
        base=f"{RUN}/models/{{strong}}",
    output:
        directory(ceiling_dir("{strong}", "{dataset}", "{seed}")),
    params:
        h=lambda w: step_hash("train_student", strong=w.strong),
    log:
        log("ceiling/{strong}_{dataset}_s{seed}"),
    benchmark:
        bench("ceiling/{strong}_{dataset}_s{seed}")
    threads: threads("train_student")
    resources:
        **res("train_student"),
    shell:
        f"{EW} train-student{PROCESSES} --config {CFG} --strong {{wildcards.strong}} --seed {{wildcards.seed}}"
        f" --data {{input.data}} --base {{input.base}} --gold --out {{output}} > {{log}} 2>&1"
