# ensemw2s: `snakemake --cores N` (or --profile profiles/slurm) rebuilds results/<run>/ from config/config.yaml.
# The DAG of a run; rules (workflow/rules/*.smk) hold no science: each calls one `ensemw2s <step>`.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        f"{RUN}/metrics.csv",
        f"{RUN}/provenance.json",
        go_no_go_files(),
        report_targets(),


include: "workflow/rules/data.smk"
include: "workflow/rules/experts.smk"
include: "workflow/rules/ensembles.smk"
include: "workflow/rules/students.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"
