"""The hooks a plugin implements to add components to invkit.

Every ``register_*`` hook receives one argument, ``register``: a callable that the plugin calls
once per component it adds::

    register(factory, name=None)

``factory`` is a class or function that builds the component from keyword parameters; invkit
reads its name (the ``name`` argument, else a ``name`` attribute, else ``__name__``), its
one-line description (the first line of its docstring) and its parameters (its signature, with
type hints and defaults) so that ``invkit list`` can describe it and configs can set it up.
Components of one kind share one namespace: two plugins registering the same name is an error
that names both plugins.

A plugin implements any subset of these hooks, with functions decorated by
``invkit.hookimpl``, and is found through the ``invkit`` entry point group. ``docs/hooks.md``
documents each hook with an example; ``docs/plugins.md`` shows how to package a plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("invkit")
hookimpl = pluggy.HookimplMarker("invkit")  # what a plugin decorates its hook functions with

Register = Callable[..., None]


@hookspec
def register_transforms(register: Register) -> None:
    """Add input transformations whose invariance invkit can measure.

    A transform factory's parameters configure it; the object it returns is called with a batch
    of images ``(B, C, H, W)``, float pixels in [0, 1], on any device, and returns a list of
    views, each a batch of the same shape (one view for grayscale; three for the default
    rotation). It must be deterministic: a random transform takes a ``seed`` parameter. It acts
    on pixels before the model's mean/std normalization and must keep the batch on its device.
    Subclassing ``invkit.Transform`` is optional; it documents the contract.
    """


@hookspec
def register_measures(register: Register) -> None:
    """Add invariance measures: functions of a model's softmax on an image and on one view.

    The object a measure factory returns is called as ``measure(original, view, labels=None)``
    with two ``(B, K)`` tensors of class probabilities and returns a ``(B,)`` tensor of
    per-sample values. Its attributes: ``higher_is_invariant`` (bool: does a larger value mean
    more invariant?), ``needs_labels`` (bool: when true, ``labels`` is a ``(B,)`` tensor of
    class indices) and ``reads`` (``"softmax"``, the default, or ``"topK"`` such as ``"top1"``:
    it is then given rows holding only their K largest probabilities, the rest 0, and can be
    computed from a study's kept outputs with no forward pass). invkit averages the values over
    a transform's views, then over samples. Subclassing ``invkit.Measure`` gives the attributes
    and their defaults.
    """


@hookspec
def register_models(register: Register) -> None:
    """Add model loaders, each keyed by the scheme of a model spec (``timm`` in ``timm:resnet18``).

    The loader is called as ``loader(rest, **params)`` where ``rest`` is the spec after the
    first colon (``resnet18``), and ``params`` come from the config or ``load_model``. It
    returns an ``invkit.LoadedModel``: the ``torch.nn.Module`` that maps normalized images to
    logits, and its ``Preprocessing`` (input size, interpolation, crop fraction, mean, std,
    number of classes and class names where known).
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Add dataset loaders, each keyed by the scheme of a dataset spec (``imagefolder:/data``).

    A spec with no colon (``digits``) names the loader with an empty ``rest``. The loader is
    called as ``loader(rest, **params)`` and returns a ``torch.utils.data.Dataset`` whose items
    are ``(image, label)``: the image a float tensor ``(C, H, W)`` of pixels in [0, 1] (or a PIL
    image that the engine converts), the label a class index, or ``-1`` for an unlabeled image.
    """


@hookspec
def register_shifts(register: Register) -> None:
    """Add dataset shifts: synthetic distribution shifts (noise, blur, weather) that turn a test
    set into a shifted copy for dataset-centric studies.

    A shift factory's parameters configure it (``severity``, say); the object it returns is
    called as ``shift(image, seed)`` with one image, a float tensor ``(C, H, W)`` in [0, 1] at
    the model's input size, and an integer seed that invkit derives from the dataset's seed and
    the image's index. It returns the shifted image, same shape, in [0, 1]. It must be
    deterministic given ``seed`` (draw any noise from a generator seeded with it), so an image
    is shifted the same way whatever the batch size or the number of workers. It runs on the
    CPU, in data-loader workers. Subclassing ``invkit.plugin.Shift`` documents the contract.
    """


@hookspec
def register_analyses(register: Register) -> None:
    """Add analyses run over a study's results table.

    The analysis object is called with an iterable of rows, each a mapping with the keys
    ``model``, ``dataset``, ``transform``, ``measure``, ``invariance`` and ``accuracy`` (``None``
    or NaN for an unlabeled dataset). It returns a result with ``to_dict()`` (strict JSON:
    analyses.json) and a readable ``str()`` (report.md), and optionally ``to_markdown()`` (shown
    instead of ``str()``), ``tables()`` (``{name: (columns, rows)}``, written to NAME.csv) and
    ``figures()`` (``(title, matplotlib Figure)`` pairs, saved to plots/). The report renders a
    result by what it offers, never by who wrote it. An analysis with ``reads_outputs = True``
    is called as ``analysis(rows, outputs=...)``, a mapping from ``(model, dataset)`` to the
    study's kept outputs (``invkit.results.outputs.Outputs``).
    """


@hookspec
def register_estimators(register: Register) -> None:
    """Add label-free accuracy estimators, which ``estimate_accuracy`` puts side by side.

    The estimator object is called as ``estimator(model, target, study)`` and returns the
    estimated accuracy (a float in [0, 1]) of ``model`` on the test set ``target``, whose labels
    it is not given. ``study`` (``invkit.analysis.estimation.StudyData``) holds what it may read:
    the kept outputs of every model on every dataset, the source set and its accuracies, the
    labeled test sets' accuracies and invariance scores. An estimator whose needs the study
    does not meet raises ``invkit.errors.EstimatorNeeds`` with a message naming what is
    missing; it never returns a number built from less. Subclassing ``invkit.Estimator``
    documents the contract.
    """


@hookspec
def register_layer_measures(register: Register) -> None:
    """Add layer measures: how invariant a layer's features are, over a whole pass.

    The object a factory returns has ``higher_is_invariant`` (bool) and ``accumulator()``,
    which returns a fresh accumulator for one model × dataset × transform × layer. The pass
    calls the accumulator's ``update(original, views)`` once per batch, with the layer's
    output on the batch's originals, a ``(B, ...)`` tensor, and on each of the transform's
    views, a list of ``(B, ...)`` tensors of the same shape; then ``result()`` once, which
    returns ``(value, per_view)``: a float, and a list of one float per view or ``None``.
    An accumulator keeps running sums, never the features. Subclassing
    ``invkit.LayerMeasure`` documents the contract (docs/layers.md).
    """


@hookspec
def register_executors(register: Register) -> None:
    """Add executors: strategies that run a study's passes, here or elsewhere.

    The executor object is called with a sequence of ``invkit.plugin.PassSpec`` (plain,
    picklable: one model × dataset pass each) and returns an iterator of ``invkit.JobOutcome``,
    one per spec, in any order, as passes finish: the ``PassResult`` of
    ``invkit.run_pass(spec)``, or the exception (with its formatted traceback). It never raises
    for a failed pass, catches ``SystemExit`` from a model's code, and lets ``KeyboardInterrupt``
    and ``invkit.errors.Interrupted`` through (stopping any workers it started). It never
    touches the store: the study writes each result as it arrives. Built-ins: ``local`` and
    ``processes``.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``invkit`` command line.

    ``cli`` is the top-level ``click.Group``; call ``cli.add_command(command)``. Keep the module
    that implements this hook light (import heavy libraries inside the command), because it is
    imported to build ``invkit --help``.
    """
