"""The error a model that cannot be used raises, in a module of its own so that every layer (the
tasks that encode for a model, modeling that builds it) can raise it."""


class ModelError(ValueError):
    """A model name, directory or bundle cannot be used; the message says what to do."""
