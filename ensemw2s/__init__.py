"""ensemw2s: weak-to-strong generalization with token-level boosted ensembles (EnsemW2S)."""

__version__ = "0.1.0"
