"""ReflectLM: fine-tuned language models that diagnose and improve themselves.

    import reflectlm
    cfg = reflectlm.load_config("configs/banking77.toml", ["train.epochs=4"])
    result = reflectlm.train(cfg)              # -> TrainResult (run_dir, metrics, ...)
    reflectlm.evaluate(result.run_dir, "data/test.csv")
    reflectlm.predict(result.run_dir, ["where is my card?"])
    findings = reflectlm.diagnose(result.run_dir)   # also writes findings.json
    loop = reflectlm.loop(cfg)                      # -> LoopResult: the self-improvement loop

Imports are lazy so `import reflectlm` stays fast; the heavy stack loads on first use.
"""

from .version import __version__

__all__ = ["__version__", "diagnose", "evaluate", "load_config", "loop", "predict", "train"]


def __getattr__(name):
    import importlib

    if name in ("train", "evaluate", "diagnose", "loop"):  # callable modules, see train.py
        return importlib.import_module(f".{name}", __name__)
    if name == "predict":
        return importlib.import_module(".evaluate", __name__).predict
    if name == "load_config":
        return importlib.import_module(".config", __name__).load_config
    raise AttributeError(f"module 'reflectlm' has no attribute {name!r}")
