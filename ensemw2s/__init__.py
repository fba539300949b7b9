"""ensemw2s: weak-to-strong generalization with token-level boosted ensembles (EnsemW2S)."""

__version__ = "0.1.0"


def _register_lm_eval_model() -> None:
    """Make `lm_eval --model ensemw2s` resolve after `import ensemw2s`, without importing torch here.

    The name is registered as a lazy placeholder (lm-eval imports ensemw2s.lmeval_model on first use).
    lm_eval.models is imported first: lm-eval fills its registry with the built-in models only while
    the registry is empty, so registering first would hide `hf` and the others. Cost: ~65 ms
    (`python -X importtime -c "import ensemw2s"`), most of it importing the lm_eval package itself.
    """
    import lm_eval.models  # noqa: F401  (registers lm-eval's own models)
    from lm_eval.api.registry import model_registry

    if "ensemw2s" not in model_registry:  # a release that reads the `lm_eval.models` entry point has it already
        model_registry.register("ensemw2s", target="ensemw2s.lmeval_model:EnsembleLM")


_register_lm_eval_model()
