"""Modules that are also the public function of the same name: `reflectlm.train(cfg)`."""

from __future__ import annotations


def callable_module(module_name: str, fn) -> None:
    """Make the module `module_name` callable as `fn`. `reflectlm.train` is both a module and the
    public function: Python's import system binds a submodule over any package attribute of the
    same name, so the module itself forwards calls, and `reflectlm.train(cfg)` works whatever was
    imported first (likewise evaluate, diagnose, loop)."""
    import sys

    class _CallableModule(type(sys)):
        def __call__(self, *args, **kwargs):
            return fn(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
