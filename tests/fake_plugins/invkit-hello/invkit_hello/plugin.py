"""A working plugin: a transform, a measure and a command."""

import click

from invkit import hookimpl


class HFlip:
    """Mirror the image left to right."""

    name = "hflip"
    num_views = 1

    def __call__(self, images):
        return [images.flip(-1)]


@hookimpl
def register_transforms(register):
    register(HFlip)


@click.command("hello")
@click.argument("who", default="world")
def hello(who):
    """Say hello (a command added by a plugin)."""
    click.echo(f"hello {who} from a plugin")


@hookimpl
def register_commands(cli):
    cli.add_command(hello)
