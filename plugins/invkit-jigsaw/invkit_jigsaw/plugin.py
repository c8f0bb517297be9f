"""The module the ``invkit`` entry point names: it only implements hooks.

It stays light (torch is imported inside the hook, through ``transform``), because invkit
imports every plugin module to build ``invkit --help``.
"""

from invkit import hookimpl


@hookimpl
def register_transforms(register):
    from invkit_jigsaw.transform import Jigsaw

    register(Jigsaw)
