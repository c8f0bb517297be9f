"""invkit-jigsaw: an invkit plugin that adds the ``jigsaw`` transform."""

__version__ = "0.1.0"
