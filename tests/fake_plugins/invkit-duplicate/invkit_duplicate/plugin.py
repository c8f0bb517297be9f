"""A plugin that registers a transform under a name a built-in already has."""

from invkit import hookimpl


def rotation(angle: float = 90.0):
    """A second transform called rotation."""
    raise AssertionError("never built")


@hookimpl
def register_transforms(register):
    register(rotation)
