"""The names of the suite's torch-side building blocks, declared once and importable without torch.

Config validation, CLI choices and the workflow's wildcard constraints read these registries; the
implementations (torch code) are "module:attribute" targets imported on first `get`. To add a building
block, write it and add one line here (or, outside the package, register it from a config `plugins:` file).
"""
from __future__ import annotations

from ensemw2s.registry import Registry

# How expert distributions are combined at each token (config: boosting.combine / a variant's combine).
COMBINERS = Registry("combine rule")
COMBINERS.add("prob", "ensemw2s.combine:PROB")  # weighted mean of probabilities (METHOD.md)
COMBINERS.add("logprob", "ensemw2s.combine:LOGPROB")  # weighted geometric mean, renormalised over V
COMBINERS.add("vote", "ensemw2s.combine:VOTE")  # weighted vote of the experts' argmax tokens

# How D_t enters the loss (boosting.token_weighting, METHOD.md step 2).
TOKEN_WEIGHTINGS = Registry("token weighting")
TOKEN_WEIGHTINGS.add("resample", "ensemw2s.boosting:resample_multipliers")
TOKEN_WEIGHTINGS.add("reweight", "ensemw2s.boosting:reweight_multipliers")
