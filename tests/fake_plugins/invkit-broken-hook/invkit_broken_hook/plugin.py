"""A plugin whose register hook raises after registering one measure."""

from invkit import hookimpl


def half_registered(original, view, labels=None):
    """Never reaches the registry: the hook fails after registering it."""
    return original[:, 0]


@hookimpl
def register_measures(register):
    register(half_registered)
    raise RuntimeError("the measure table is corrupt")
