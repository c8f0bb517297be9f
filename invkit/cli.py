"""The ``invkit`` command line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from typing import Any

import click

from invkit.config import AUTO_OR_COUNT, is_auto_or_count
from invkit.errors import (
    EXIT_ERROR,
    EXIT_STORAGE,
    Interrupted,
    InvkitError,
    InvkitWarning,
    StorageError,
    plural,
)
from invkit.markup import terminal
from invkit.plugins import get_host, reset_host
from invkit.registry import KINDS, Component

KIND_CHOICES = [plural(k) for k in KINDS]


class PluginCommandGroup(click.Group):
    """A group that asks third-party plugins for their commands only when commands are listed
    or looked up, so that ``import invkit.cli`` stays cheap."""

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if not self._plugins_added:
            self._plugins_added = True
            get_host().add_commands(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._add_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command


def _strict(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        reset_host(strict=True)


def _version() -> str:
    from invkit.version import __version__

    return __version__


class AutoOrCount(click.ParamType):
    """``auto`` or an integer of at least the least the run option ``key`` takes (checked by
    the config's own rule)."""

    name = "auto|N"

    def __init__(self, key: str):
        self.least = AUTO_OR_COUNT[key]

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        number: Any = value
        with contextlib.suppress(ValueError):  # "auto", or text the rule refuses
            number = int(value)
        if not is_auto_or_count(number, self.least):
            self.fail(f"{value!r} is neither auto nor an integer >= {self.least}", param, ctx)
        return number


@click.group(cls=PluginCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=_version(), prog_name="invkit")
@click.option(
    "--strict-plugins",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_strict,
    help="Fail when a plugin cannot load or register (same as INVKIT_STRICT_PLUGINS=1).",
)
def cli() -> None:
    """Measure how invariant image classifiers are to transformations of their input, and how
    that invariance correlates with accuracy across models and test sets.

    \b
    Plugins come from the `invkit` entry point group; environment variables:
      INVKIT_LOAD_PLUGINS=a,b     load only these third-party plugins (empty: none)
      INVKIT_DISABLE_PLUGINS=a,b  never load these
      INVKIT_STRICT_PLUGINS=1     a broken plugin is an error, not a warning
    """


@cli.command("plugins")
@click.option("--all", "include_builtins", is_flag=True, help="Include the built-in plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def plugins_command(include_builtins: bool, as_json: bool) -> None:
    """List installed plugins: name, version and the hooks each implements."""
    infos = get_host().plugins(include_builtins=include_builtins)
    if as_json:
        click.echo(json.dumps([info.to_dict() for info in infos], indent=2))
        return
    if not infos:
        click.echo("no third-party plugins installed (`invkit plugins --all` shows built-ins)")
    for info in infos:
        origin = "built-in" if info.builtin else "plugin"
        click.echo(f"{info.name} {info.version} ({origin})")
        if info.filtered_by:
            click.echo(f"  not loaded: left out by {info.filtered_by}")
        elif info.error:
            click.echo(f"  FAILED: {info.error}")
        else:
            click.echo(f"  hooks: {', '.join(info.hooks) or '(none)'}")
        if info.unknown_hooks:
            click.echo(f"  unknown hooks (ignored): {', '.join(info.unknown_hooks)}")


LIST_WIDTH = 96  # invkit list wraps descriptions at whole words


def _component_text(component: Component) -> list[str]:
    lines = [f"{component.name}  [{component.plugin}]"]
    lines += textwrap.wrap(component.description, LIST_WIDTH, initial_indent="    ",
                           subsequent_indent="    ")  # fmt: skip
    if component.kind in ("measure", "layer_measure"):
        factory: Any = component.factory
        direction = "higher" if getattr(factory, "higher_is_invariant", True) else "lower"
        labels = ", needs labels" if getattr(factory, "needs_labels", False) else ""
        lines.append(f"    ({direction} = more invariant{labels})")
    lines.extend(f"    {param.describe()}" for param in component.params)
    return lines


@cli.command("list")
@click.argument("kind", type=click.Choice(KIND_CHOICES + list(KINDS)), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def list_command(kind: str | None, as_json: bool) -> None:
    """List components (all kinds, or one) with descriptions and parameters."""
    from invkit.lookup import list_components

    components = list_components(kind)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in components], indent=2))
        return
    current = None
    for component in components:
        if kind is None and component.kind != current:
            current = component.kind
            click.echo(f"== {current} ==")
        click.echo("\n".join(_component_text(component)))


def _names(value: str | None) -> list[str]:
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def _to_stderr(text: str) -> None:
    click.echo(terminal(text), err=True)


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", *args]
    click.echo("$ " + " ".join(command), err=True)
    result = subprocess.run(command, check=False)
    if result.returncode:
        raise click.exceptions.Exit(result.returncode)


@cli.command("install")
@click.argument("packages", nargs=-1, required=True)
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade packages already installed.")
@click.option("-e", "--editable", is_flag=True, help="Install a local plugin folder editable.")
def install_command(packages: tuple[str, ...], upgrade: bool, editable: bool) -> None:
    """Install plugin packages with pip, into the environment invkit runs in.

    PACKAGES are anything pip accepts: names from a package index, paths, or wheel files.
    """
    flags = (["--upgrade"] if upgrade else []) + (["--editable"] if editable else [])
    _pip("install", *flags, *packages)


@cli.command("uninstall")
@click.argument("packages", nargs=-1, required=True)
def uninstall_command(packages: tuple[str, ...]) -> None:
    """Uninstall plugin packages from the environment invkit runs in."""
    _pip("uninstall", "--yes", *packages)


@cli.command("study")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--demo", is_flag=True, help="Run the embedded demo study (no files, no network).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Output directory (default: the config's [run] out, else invkit-results beside the "
    "config file).",
)
@click.option(
    "--device", help="auto, cpu, cuda or cuda:N (default: the config's [run] device, else auto)."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Images per batch (default: the config's [run] batch_size, else 64).",
)
@click.option(
    "--workers",
    type=AutoOrCount("workers"),
    help="Data-loader processes decoding while the models run: a number, or auto (on a GPU "
    "half the cores, at most 8; on the CPU, whose cores run the models, none) (default: the "
    "config's [run] workers, else auto).",
)
@click.option(
    "--models-per-pass",
    type=AutoOrCount("models_per_pass"),
    help="At most this many models with the same input share one decoding of a dataset, or "
    "auto (up to 8, within 4 GiB of parameters, with the local executor; one with the others) "
    "(default: the config's [run] models_per_pass, else auto).",
)
@click.option("--amp/--no-amp", default=None, help="bfloat16 autocast on CUDA (off by default).")
@click.option(
    "--executor",
    help="How passes run: local, processes, ray, or a plugin's (default: the config's [run] "
    "executor, else local).",
)
@click.option(
    "--ray-address",
    help="Run passes as Ray tasks on this cluster (implies --executor ray; RAY_ADDRESS works too).",
)
@click.option("--fresh", is_flag=True, help="Delete the stored results and start over.")
@click.option("--per-sample", is_flag=True, default=None, help="Store per-image values too.")
@click.option(
    "--skip-bad-images",
    is_flag=True,
    default=None,
    help="Record and skip unreadable image files (named in the console and the report) instead "
    "of failing the pass that meets them.",
)
@click.option(
    "--trust-checkpoints",
    is_flag=True,
    default=None,
    help="Allow checkpoints that run code when unpickled (only from sources you trust).",
)
@click.option("--models", help="Run only these models' passes (labels, comma-separated).")
@click.option("--datasets", help="Run only these datasets' passes (labels, comma-separated).")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="A smoke run: at most N images per dataset, values printed, nothing stored.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Only check the study, as `invkit check CONFIG` does, and exit.",
)
@click.option("--progress/--no-progress", default=True, help="Progress bars (default: on).")
def study_command(
    config: str | None,
    demo: bool,
    out: str | None,
    fresh: bool,
    ray_address: str | None,
    models: str | None,
    datasets: str | None,
    limit: int | None,
    check_only: bool,
    progress: bool,
    **overrides: Any,
) -> None:
    """Evaluate every model on every dataset under every transform and measure, run the
    analyses, and write tables, plots and report.md to the output directory.

    CONFIG is a TOML file (docs/config.md). Re-running skips every cell already computed with
    the same configuration; interrupting loses only the pass in progress.
    """
    import dataclasses

    from invkit.run.study import Study

    if demo == (config is not None):
        raise click.UsageError("give either a CONFIG file or --demo")
    found: list[str] = []
    if demo:
        from invkit.demo import demo_config

        study_config = demo_config(echo=_to_stderr)
    elif check_only:  # as invkit check: the entries that are right are still loaded
        from invkit.config import load_config

        study_config = load_config(config, found)
    else:
        study_config = _load(config)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if ray_address is not None:  # "" is refused by the ray executor, never quietly local
        params = {**study_config.run.executor_params, "address": ray_address}
        changes.update(executor="ray", executor_params=params)
    study_config = dataclasses.replace(
        study_config, run=dataclasses.replace(study_config.run, **changes)
    )
    if check_only:
        _check(study_config, images=False, progress=progress, found=found)
        return
    study = Study(
        study_config,
        out_dir=out,
        fresh=fresh,
        progress=progress,
        echo=_to_stderr,
        models=_names(models),
        datasets=_names(datasets),
        smoke_limit=limit,
    )
    try:
        outcome = study.run()
    except (Interrupted, KeyboardInterrupt) as stop:  # KeyboardInterrupt: raised by user code
        if not isinstance(stop, Interrupted):
            stop = Interrupted(signal.SIGINT, "SIGINT")
        again = "it again without --fresh" if fresh else "the same command again"
        _to_stderr(
            f"\ninvkit: interrupted ({stop.name}); completed cells are kept in {study.out_dir}. "
            f"Run {again} to resume."
        )
        raise SystemExit(stop.exit_code) from None
    if limit is not None:
        click.echo(f"invkit: smoke run: {outcome.computed} cell(s) in {outcome.passes} pass(es)")
        raise SystemExit(1 if outcome.failures else 0)
    click.echo(
        f"invkit: {outcome.computed} cell(s) computed in {outcome.passes} pass(es), "
        f"{outcome.from_outputs} from kept outputs, {outcome.reused} reused; "
        f"{outcome.decoded:,} images decoded, "
        f"{outcome.forward_images:,} through the models; "
        f"report: {outcome.report.get('report', study.out_dir)}"
    )
    if outcome.failures:
        click.echo(f"invkit: {len(outcome.failures)} pass(es) failed:", err=True)
        for failure in outcome.failures:
            _to_stderr(f"  {failure['model']} × {failure['dataset']}: {failure['error']}")
        raise SystemExit(1)


def _load(path: str) -> Any:
    """The config at ``path``, or one error listing every problem in it: its keys, types and
    values, and the names and parameters of its components, all at once."""
    from invkit.config import load_config
    from invkit.run.plan import Problems, StudyPlan

    problems: list[str] = []
    config = load_config(path, problems)
    if problems:
        collected = Problems(problems)
        StudyPlan(config, collected)  # the entries that were right: their names and parameters
        collected.raise_if_any()
    return config


def _check(config: Any, images: bool, progress: bool, found: list[str] | None = None) -> None:
    from invkit.run.check import check_study
    from invkit.run.plan import Problems

    report = check_study(config, images=images, progress=progress, echo=_to_stderr, found=found)
    if report.code:
        _to_stderr(f"invkit: the config runs this code: {', '.join(report.code)}")
    Problems(report.problems).raise_if_any()
    click.echo(
        f"invkit: check passed: {report.models} model(s) loaded and {report.datasets} dataset(s) "
        "opened, every class plan matched" + (", every image decoded" if images else "")
    )


@cli.command("check")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--images", is_flag=True, help="Also decode every image of every dataset.")
@click.option("--progress/--no-progress", default=True, help="Progress bars (default: on).")
def check_command(config: str, images: bool, progress: bool) -> None:
    """Check a study CONFIG without running it, and report every problem at once.

    Checks every component name and parameter, every path, every class map; loads every
    model on the CPU with its weights and passes it one blank image; opens every dataset and
    matches its classes to every model's outputs. With --images, decodes every image. Writes
    nothing.
    """
    from invkit.config import load_config

    found: list[str] = []  # config mistakes; the entries that are right are still loaded
    _check(load_config(config, found), images=images, progress=progress, found=found)


@cli.command("report")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
def report_command(directory: str) -> None:
    """Re-run the analyses and re-write the report of a study's output DIRECTORY, from its
    results store alone (no model is run)."""
    from invkit.report.report import rerender

    paths = rerender(directory)
    click.echo(f"invkit: report written to {paths['report']}")


@cli.command("layers")
@click.argument("spec")
@click.option(
    "--param", "params", multiple=True, metavar="KEY=VALUE",
    help="A loader parameter, VALUE read as TOML (pretrained=false, num_classes=10, "
    'checkpoint="model.pt"); repeat for more.',
)  # fmt: skip
def layers_command(spec: str, params: tuple[str, ...]) -> None:
    """List the modules of the model SPEC (as a [[models]] spec names it) with the shape of
    each one's output on one image: the names a study's `layers = [...]` can measure.
    "output" is the model's own output; "stages" (timm models) is listed last. A timm model
    needs its weights unless --param pretrained=false."""
    import tomllib

    from invkit.api import load_model
    from invkit.inputs.layers import module_outputs, timm_stages

    values = {}
    for param in params:
        key, separator, text = param.partition("=")
        if not separator or not key.strip():
            raise InvkitError(f"--param takes KEY=VALUE; got {param!r}")
        try:
            values[key.strip()] = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            values[key.strip()] = text  # a bare word: text
    loaded = load_model(spec, **values)
    rows = module_outputs(loaded.module, loaded.preprocessing.input_size)
    width = max(len(name) for name, _, _ in rows)
    kinds = max(len(kind) for _, kind, _ in rows)
    for name, kind, output in rows:
        click.echo(terminal(f"{name:<{width}}  {kind:<{kinds}}  {output}"))
    if spec.startswith("timm:"):
        stages = timm_stages(spec.split(":", 1)[1])
        click.echo(terminal(f'"stages": {", ".join(stages)}'))


@cli.command("outputs")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def outputs_command(directory: str, as_json: bool) -> None:
    """List the model outputs a study's output DIRECTORY kept: per model × dataset, the level
    (summary or full), the top-k, the views, the images and the size on disk
    (docs/outputs.md says what each level can answer)."""
    from invkit.results.reading import StudyOutputs

    listed = StudyOutputs.of(directory).listing()
    unreadable = [row for row in listed if "error" in row]
    if as_json:
        click.echo(json.dumps(listed, indent=2))
    elif not listed:
        click.echo(f"invkit: {directory} kept no model outputs (run.outputs = 'none'?)")
    else:
        _print_listing(listed)
    if unreadable:
        raise SystemExit(EXIT_ERROR)


def _print_listing(listed: list[dict[str, Any]]) -> None:
    for row in listed:
        if "error" in row:
            click.echo(
                terminal(f"invkit: {row['model']} × {row['dataset']}: {row['error']}"), err=True
            )
            continue
        click.echo(
            terminal(
                f"{row['model']} × {row['dataset']}: {row['level']}, top-{row['topk']} of "
                f"{row['classes']} classes, {row['images']:,} images × {len(row['views'])} "
                f"views ({', '.join(row['transforms'])}), {row['bytes'] / 2**20:,.2f} MiB"
            )
        )
    readable = [row for row in listed if "error" not in row]
    total = sum(row["bytes"] for row in readable)
    unreadable = len(listed) - len(readable)
    click.echo(
        f"invkit: {len(readable)} model × dataset output(s), {total / 2**20:,.2f} MiB"
        + (f"; {unreadable} unreadable (named above)" if unreadable else "")
    )


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = f"invkit: warning: {message}" if issubclass(category, InvkitWarning) else None
    if text is None:
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    click.echo(terminal(text), err=True)


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM raise ``Interrupted`` in this process (data-loader workers forked
    from it keep the usual ``KeyboardInterrupt``), so both end a study the same way."""
    main_process = os.getpid()

    def stop(signal_number: int, frame: Any) -> None:
        if os.getpid() != main_process:
            raise KeyboardInterrupt
        raise Interrupted(signal_number, signal.Signals(signal_number).name)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def main() -> None:
    """Entry point of the ``invkit`` console script: errors become one clear line, and each
    kind of ending has its own exit status (docs/cli.md)."""
    warnings.showwarning = _show_warning
    _stop_on_signals()
    try:
        cli(prog_name="invkit")
    except Interrupted as stop:
        click.echo(f"\ninvkit: interrupted ({stop.name})", err=True)
        sys.exit(stop.exit_code)
    except StorageError as error:
        _to_stderr(f"invkit: storage error: {error}")
        sys.exit(EXIT_STORAGE)
    except InvkitError as error:
        _to_stderr(f"invkit: error: {error}")
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
