"""A plugin whose author wrote ``register_transform`` for ``register_transforms``."""

from invkit import Transform, hookimpl


class Flip(Transform):
    """Mirror left to right."""

    name = "flip"
    num_views = 1

    def __call__(self, images):
        return [images.flip(-1)]


@hookimpl
def register_transform(register):
    register(Flip)
