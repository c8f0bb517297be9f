"""Study configuration: a TOML file read into plain dataclasses, with errors that name the key.

``docs/config.md`` documents every key. Reading a config evaluates nothing; a ``python:`` model
spec names code that the study will run (docs/reliability.md says which code is accepted).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from invkit.errors import InvkitError

PREPROCESSING_KEYS = ("input_size", "interpolation", "crop_pct", "mean", "std")
SHIFT_SHORTHAND = ("corruption", "severity")  # corruption = NAME, severity = N: a shift


# A model's preprocessing values, checked when a config is read (and again, whole, when a
# model is loaded: invkit.inputs.preprocessing), so that a wrong one costs no model load.
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")
CHANNELS = (1, 3)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(where: str, key: str, value: Any, positive: bool) -> list[float]:
    what = "positive numbers" if positive else "numbers"
    if not isinstance(value, list | tuple) or not value or not all(map(_is_number, value)):
        raise InvkitError(f"{where}: preprocessing.{key} must be a list of {what}; got {value!r}")
    if positive and any(v <= 0 for v in value):
        raise InvkitError(
            f"{where}: preprocessing.{key} must be positive (it divides the pixels); got {value!r}"
        )
    return list(value)


def check_preprocessing(values: Mapping[str, Any], where: str) -> None:
    """Refuse bad preprocessing values, naming ``where`` and the key; ``values`` may be partial
    (a config's overrides) or whole (a loaded model's)."""
    channels = None
    if values.get("input_size") is not None:
        size = values["input_size"]
        if (
            not isinstance(size, list | tuple)
            or len(size) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise InvkitError(
                f"{where}: preprocessing.input_size must be [channels, height, width], three "
                f"positive integers such as [3, 224, 224]; got {size!r}"
            )
        channels = size[0]
        if channels not in CHANNELS:
            raise InvkitError(
                f"{where}: preprocessing.input_size has {channels} channels; invkit feeds models "
                "1 (grayscale) or 3 (RGB) channels"
            )
    if values.get("interpolation") is not None and values["interpolation"] not in INTERPOLATIONS:
        raise InvkitError(
            f"{where}: preprocessing.interpolation {values['interpolation']!r} is not one of "
            f"{', '.join(INTERPOLATIONS)}"
        )
    crop = values.get("crop_pct")
    if crop is not None and not (_is_number(crop) and 0 < crop <= 1):
        raise InvkitError(
            f"{where}: preprocessing.crop_pct must be a number in (0, 1] (the fraction of the "
            f"resized image kept by the centre crop; 1.0 keeps it all); got {crop!r}"
        )
    lengths = {}
    for key, positive in (("mean", False), ("std", True)):
        if values.get(key) is not None:
            lengths[key] = len(_numbers(where, key, values[key], positive))
    for key, length in lengths.items():
        if length not in CHANNELS:
            raise InvkitError(
                f"{where}: preprocessing.{key} has {length} values; give one per channel: 3 for "
                "an RGB model, 1 for a grayscale one"
            )
        if channels is not None and length != channels:
            raise InvkitError(
                f"{where}: preprocessing.{key} has {length} value(s) but the model takes "
                f"{channels} channel(s) (input_size {list(values['input_size'])}); give "
                f"{key} {channels} value(s)"
            )
    if len(set(lengths.values())) > 1:
        raise InvkitError(
            f"{where}: preprocessing.mean and std differ in length ({lengths['mean']} and "
            f"{lengths['std']}); give one value per channel in each"
        )


class ConfigError(InvkitError):
    """A study configuration that cannot be used as written: one problem, or several (one line
    each, in ``lines``)."""

    def __init__(self, message: str, lines: list[str] | None = None):
        super().__init__(message)
        self.lines = lines or [message]


def problems_error(lines: list[str], what: str = "the config") -> ConfigError:
    """One error for every problem found: the line itself when there is one, else a count
    and one line each."""
    if len(lines) == 1:
        return ConfigError(lines[0])
    listed = "\n".join(f"  - {line}" for line in lines)
    return ConfigError(f"{len(lines)} problems in {what}:\n{listed}", lines)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    spec: str
    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    group: str | None = None  # runs of one training recipe (seeds): GDE's partners
    layers: tuple[str, ...] = ()  # layers whose invariance is measured (docs/layers.md)


@dataclass(frozen=True)
class ComponentEntry:
    """A transform, measure or analysis: a label, the component's name, its parameters."""

    name: str
    component: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    spec: str
    params: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    seed: int = 0
    class_map: str | None = None
    class_subset: str | None = None
    shift: ComponentEntry | None = None
    held_out: bool = False  # labels kept from the analyses; accuracy shown beside predictions
    source: bool = False  # the labeled in-distribution set direct estimators fit on (one)
    verify: str = "listing"  # what fingerprints its files: names, sizes, times; or "content"
    meta_set: bool = False  # a synthetic shift of a labeled set: line fits use it, never a target


VIEWS_PER_FORWARD = 4  # a chunk of views: a batch's forward pass big enough, memory flat


@dataclass(frozen=True)
class RunOptions:
    out: str = "invkit-results"
    device: str = "auto"
    batch_size: int = 64
    workers: int | str = "auto"  # data-loader processes; "auto": invkit.run.passes.auto_workers
    amp: bool = False
    per_sample: bool = False
    bootstrap: int = 0
    seed: int = 0
    executor: str = "local"
    executor_params: dict = field(default_factory=dict)
    max_views_per_forward: int = VIEWS_PER_FORWARD  # views made and run at once; 0: all
    skip_bad_images: bool = False
    trust_checkpoints: bool = False
    min_free_mb: int = 100
    models_per_pass: int | str = "auto"  # models sharing one decoding; "auto": AUTO_MODELS_PER_PASS
    reduced_decoding: bool = False  # JPEG DCT scaling down to the resize's size (not identical)
    channels_last: bool = True  # on CUDA: channels-last memory format for models and inputs
    compile: bool = False  # torch.compile each model before its pass
    outputs: str = "summary"  # what each pass keeps of its outputs: "summary", "full", "none"
    outputs_topk: int = 5  # classes kept per image and view (top-k indices and probabilities)
    layers: tuple[str, ...] = ()  # every model's layers, unless its entry names its own


@dataclass(frozen=True)
class StudyConfig:
    models: tuple[ModelEntry, ...]
    datasets: tuple[DatasetEntry, ...]
    transforms: tuple[ComponentEntry, ...]
    measures: tuple[ComponentEntry, ...]
    analyses: tuple[ComponentEntry, ...]
    run: RunOptions
    base_dir: Path = Path(".")
    layer_measures: tuple[ComponentEntry, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, stored with the results so ``invkit report`` can re-render."""

        def entries(items: tuple[Any, ...]) -> list[dict[str, Any]]:
            return [dataclasses.asdict(item) for item in items]

        return {
            "models": entries(self.models),
            "datasets": entries(self.datasets),
            "transforms": entries(self.transforms),
            "measures": entries(self.measures),
            "analyses": entries(self.analyses),
            "layer_measures": entries(self.layer_measures),
            "run": dataclasses.asdict(self.run),
            "base_dir": str(self.base_dir),
        }


TOP_LEVEL = ("models", "datasets", "transforms", "measures", "layer_measures", "analyses", "run")
LAYER_SEPARATOR = "@"  # a layer cell's label in the store: "normalized_variance@layer2"
DEFAULT_LAYER_MEASURES = ("normalized_variance", "cka")  # when layers are named and these are not


def _unknown(where: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(f"{where}: unknown key {key!r}; {hint}known keys: {', '.join(known)}")


def _check_keys(where: str, table: Mapping[str, Any], known: list[str]) -> None:
    """Every unknown key of ``table`` (each its own line), before anything else is read."""
    lines = [str(_unknown(where, key, known)) for key in table if key not in known]
    if lines:
        raise problems_error(lines)


def _collected(problems: list[str], build: Any, *args: Any) -> Any:
    """``build(*args)``, or ``None`` with its problems recorded."""
    try:
        return build(*args)
    except ConfigError as error:
        problems.extend(error.lines)
        return None


def _expect(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{where} must be {what}; got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where} must be {what}; got {value!r} ({type(value).__name__})")
    return value


def _table_list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if isinstance(value, Mapping):
        raise ConfigError(f"'{key}' must be a list: write [[{key}]] (double brackets) per entry")
    return _expect(f"'{key}'", value, list, "a list")


MODEL_KEYS = [
    "name", "names", "spec", "specs", "specs_file", "params", "preprocessing", "group", "layers",
]  # fmt: skip
NAME_PLACEHOLDER = "{name}"  # in a many-model entry's params: each model's own name


MAX_LIST_BYTES = 4 * 2**20  # a specs_file: about 100,000 specs


def _small_text_file(where: str, path: Path) -> str:
    """A UTF-8 text file of at most ``MAX_LIST_BYTES``, read only when it is a regular file (a
    FIFO would block, ``/dev/zero`` never ends); else a ``ConfigError`` naming it."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{where}: {str(path)!r} is not a regular file; name a text file")
        if info.st_size > MAX_LIST_BYTES:
            raise ConfigError(
                f"{where}: {str(path)!r} holds {info.st_size:,} bytes, more than the "
                f"{MAX_LIST_BYTES:,} a list of specs needs; name a text file of one spec per line"
            )
        with path.open("rb") as handle:
            return handle.read(MAX_LIST_BYTES + 1)[:MAX_LIST_BYTES].decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: cannot read {str(path)!r} ({error})") from None


def _models(i: int, raw: Any, base_dir: Path) -> list[ModelEntry]:
    """One ``[[models]]`` entry: a model, or many sharing ``params`` and ``preprocessing``:
    ``names = [...]`` with one ``spec`` (runs of one architecture, each with its own
    checkpoint), or ``specs = [...]`` or ``specs_file`` (one spec per line, ``#`` comments),
    each named by its spec. In a many-model entry, ``{name}`` in a text of ``params`` is each
    model's name: ``checkpoint = "ckpt/{name}.pt"``."""
    where = f"models[{i}]"
    if not isinstance(raw, Mapping) or not ({"names", "specs", "specs_file"} & set(raw)):
        return [_model(where, raw)]
    _check_keys(where, raw, MODEL_KEYS)
    given = [key for key in ("name", "names", "specs", "specs_file") if key in raw]
    if "spec" in raw and "names" not in raw:
        given.insert(0, "spec")
    if len(given) > 1:
        raise ConfigError(
            f"{where} gives {' and '.join(given)}; keep one: spec (with name) for one model, "
            "spec with names for runs of one spec, specs or specs_file for many specs"
        )
    shared = {k: raw[k] for k in ("params", "preprocessing", "group", "layers") if k in raw}
    if "names" in raw:
        if "spec" not in raw:
            raise ConfigError(f'{where} gives names but no spec; add spec = "python:..."')
        names = _expect(f"{where}.names", raw["names"], list, "a list of model names")
        if not names:
            raise ConfigError(f"{where}.names lists no model")
        return [
            _model(f"{where}.names[{j}]", _named(raw, name, shared)) for j, name in enumerate(names)
        ]
    if "specs" in raw:
        specs = _expect(f"{where}.specs", raw["specs"], list, "a list of spec strings")
        origin = f"{where}.specs"
    else:
        path = Path(_expect(f"{where}.specs_file", raw["specs_file"], str, "a file name"))
        path = path if path.is_absolute() else base_dir / path
        text = _small_text_file(f"{where}.specs_file", path)
        specs = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        specs = [spec for spec in specs if spec]
        origin = f"{where}.specs_file ({path.name})"
    if not specs:
        raise ConfigError(f"{where}: {origin} lists no model")
    return [
        _model(f"{origin}[{j}]", {**_named(raw, spec, shared), "spec": spec})
        for j, spec in enumerate(specs)
    ]


def _named(raw: Mapping[str, Any], name: Any, shared: Mapping[str, Any]) -> dict[str, Any]:
    """One model of a many-model entry: its name, the entry's spec, and the shared keys with
    ``{name}`` in the texts of ``params`` replaced by the name."""
    entry: dict[str, Any] = {**shared, "name": name}
    if "spec" in raw:
        entry["spec"] = raw["spec"]
    if isinstance(name, str) and isinstance(shared.get("params"), Mapping):
        entry["params"] = _with_name(shared["params"], name)
    return entry


def _with_name(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value.replace(NAME_PLACEHOLDER, name)
    if isinstance(value, Mapping):
        return {k: _with_name(v, name) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_name(v, name) for v in value]
    return value


def _model(where: str, raw: Any) -> ModelEntry:
    if isinstance(raw, str):
        return ModelEntry(name=raw, spec=raw)
    _expect(where, raw, Mapping, 'a table such as { spec = "timm:resnet18" } or a spec string')
    _check_keys(where, raw, [k for k in MODEL_KEYS if k not in ("names", "specs", "specs_file")])
    if "spec" not in raw:
        raise ConfigError(f'{where} needs a spec, e.g. spec = "timm:resnet18"')
    spec = _expect(f"{where}.spec", raw["spec"], str, "a string such as 'timm:resnet18'")
    preprocessing = dict(
        _expect(f"{where}.preprocessing", raw.get("preprocessing", {}), Mapping, "a table")
    )
    _check_keys(f"{where}.preprocessing", preprocessing, list(PREPROCESSING_KEYS))
    name = _expect(f"{where}.name", raw.get("name", spec), str, "a string")
    try:
        check_preprocessing(preprocessing, f"{where} ({name!r})")
    except InvkitError as error:
        raise ConfigError(str(error)) from None
    return ModelEntry(
        name=name,
        spec=spec,
        params=dict(_expect(f"{where}.params", raw.get("params", {}), Mapping, "a table")),
        preprocessing=preprocessing,
        group=_optional_str(f"{where}.group", raw.get("group")),
        layers=layer_names(f"{where}.layers", raw.get("layers", [])),
    )


def layer_names(where: str, value: Any) -> tuple[str, ...]:
    """Layers as a config names them: a list of module names (``"output"`` and ``"stages"``
    among them), or one such name."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(
            f'{where} must be a list of module names, e.g. ["layer1", "layer2.1.conv2", '
            f'"output"], or "stages"; got {value!r}'
        )
    bad = [n for n in names if LAYER_SEPARATOR in n]
    if bad:
        raise ConfigError(
            f"{where}: {bad[0]!r} is not a module name (no {LAYER_SEPARATOR!r} in one)"
        )
    return tuple(dict.fromkeys(names))


def _dataset(i: int, raw: Any) -> DatasetEntry | list[DatasetEntry]:
    """One ``[[datasets]]`` entry; with ``meta_sets``, also its shifted copies (``meta_sets``)."""
    where = f"datasets[{i}]"
    if isinstance(raw, str):
        return DatasetEntry(name=raw, spec=raw)
    _expect(where, raw, Mapping, 'a table such as { spec = "imagefolder:/data/val" }')
    known = [f.name for f in fields(DatasetEntry) if f.name != "meta_set"]
    _check_keys(where, raw, [*known, *SHIFT_SHORTHAND, "meta_sets"])
    if "spec" not in raw:
        raise ConfigError(f'{where} needs a spec, e.g. spec = "imagefolder:/data/val"')
    spec = _expect(f"{where}.spec", raw["spec"], str, "a string")
    limit = raw.get("limit")
    if limit is not None and (_expect(f"{where}.limit", limit, int, "a positive integer") < 1):
        raise ConfigError(f"{where}.limit must be a positive integer; got {limit}")
    entry = DatasetEntry(
        name=_expect(f"{where}.name", raw.get("name", spec), str, "a string"),
        spec=spec,
        params=dict(_expect(f"{where}.params", raw.get("params", {}), Mapping, "a table")),
        limit=limit,
        seed=_non_negative(f"{where}.seed", raw.get("seed", 0)),
        class_map=_optional_str(f"{where}.class_map", raw.get("class_map")),
        class_subset=_optional_str(f"{where}.class_subset", raw.get("class_subset")),
        shift=_shift(where, raw),
        held_out=_expect(f"{where}.held_out", raw.get("held_out", False), bool, "true or false"),
        source=_expect(f"{where}.source", raw.get("source", False), bool, "true or false"),
        verify=_choice(f"{where}.verify", raw.get("verify", "listing"), VERIFY_MODES),
    )
    if "meta_sets" not in raw:
        return entry
    return [entry, *meta_sets(f"{where}.meta_sets", entry, raw["meta_sets"])]


META_SET_FORM = (
    'a table such as { shifts = ["contrast", "gaussian_noise"], severities = [1, 2, 3] }'
)


def meta_sets(where: str, base: DatasetEntry, raw: Any) -> list[DatasetEntry]:
    """The meta-sets of a labeled dataset: a copy of it per shift and severity, named
    ``NAME+SHIFT-SEVERITY``, labeled, and marked so that estimators fit on them and never
    estimate them (Deng & Zheng, CVPR 2021). ``shifts = "all"``: every registered shift that
    takes a severity."""
    _expect(where, raw, Mapping, META_SET_FORM)
    _check_keys(where, raw, ["shifts", "severities"])
    if base.held_out or base.shift is not None:
        why = "is held out" if base.held_out else "has a shift of its own"
        raise ConfigError(
            f"{where}: dataset {base.name!r} {why}; meta-sets are made from a labeled, unshifted "
            "set (the source, usually)"
        )
    shifts = raw.get("shifts", "all")
    if shifts == "all":
        from invkit.lookup import list_components

        shifts = [
            c.name for c in list_components("shift") if any(p.name == "severity" for p in c.params)
        ]
    _expect(f"{where}.shifts", shifts, list, '"all" or a list of shift names')
    severities = _expect(f"{where}.severities", raw.get("severities", [1, 2, 3, 4, 5]), list,
                         "a list of integers")  # fmt: skip
    for value in [*shifts, *severities]:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ConfigError(f"{where}: {value!r} is neither a shift name nor a severity")
    if not shifts or not severities or any(not isinstance(s, int) for s in severities):
        raise ConfigError(f"{where} must be {META_SET_FORM}: at least one of each, severities "
                          "as integers")  # fmt: skip
    return [
        dataclasses.replace(
            base,
            name=f"{base.name}+{shift}-{severity}",
            shift=ComponentEntry(name=shift, component=shift, params={"severity": severity}),
            source=False,
            meta_set=True,
        )
        for shift in dict.fromkeys(shifts)
        for severity in dict.fromkeys(severities)
    ]


def _shift(where: str, raw: Mapping[str, Any]) -> ComponentEntry | None:
    """``shift = "name"`` or ``{ component = ..., params = { ... } }``; or the shorthand
    ``corruption = NAME`` with ``severity = N`` (default 1)."""
    if "shift" in raw:
        if any(key in raw for key in SHIFT_SHORTHAND):
            raise ConfigError(
                f"{where} gives both shift and corruption/severity; keep one (corruption = NAME, "
                "severity = N is short for shift = { component = NAME, params = { severity = N } })"
            )
        return _component(f"{where}.shift", None, raw["shift"])
    if "corruption" not in raw:
        if "severity" in raw:
            raise ConfigError(f"{where}.severity needs a corruption (or use shift = {{ ... }})")
        return None
    name = _expect(f"{where}.corruption", raw["corruption"], str, "a shift's name")
    severity = _expect(f"{where}.severity", raw.get("severity", 1), int, "an integer")
    return ComponentEntry(name=name, component=name, params={"severity": severity})


OUTPUT_LEVELS = ("summary", "full", "none")  # docs/outputs.md: what each keeps
VERIFY_MODES = ("listing", "content")  # a dataset's files: by name, size and time, or by bytes


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        shown = " or ".join(repr(c) for c in choices)
        raise ConfigError(f"{where} must be {shown}; got {value!r}")
    return value


def _non_negative(where: str, value: Any) -> int:
    if _expect(where, value, int, "a non-negative integer") < 0:
        raise ConfigError(f"{where} must be a non-negative integer; got {value}")
    return value


def _optional_str(where: str, value: Any) -> str | None:
    return None if value is None else _expect(where, value, str, "a string")


def _component(section: str, i: int | None, raw: Any) -> ComponentEntry:
    where = section if i is None else f"{section}[{i}]"
    if isinstance(raw, str):
        return ComponentEntry(name=raw, component=raw)
    _expect(where, raw, Mapping, 'a name or a table such as { name = "...", params = {} }')
    _check_keys(where, raw, ["name", "component", "params"])
    if "name" not in raw and "component" not in raw:
        raise ConfigError(f"{where} needs a name (the component's, or a label plus component)")
    component = _expect(
        f"{where}.component", raw.get("component", raw.get("name")), str, "a string"
    )
    return ComponentEntry(
        name=_expect(f"{where}.name", raw.get("name", component), str, "a string"),
        component=component,
        params=dict(_expect(f"{where}.params", raw.get("params", {}), Mapping, "a table")),
    )


AUTO_OR_COUNT = {"workers": 0, "models_per_pass": 1}  # run options taking "auto" or a count
MAX_BOOTSTRAP = 1_000_000  # resamples per cell: beyond, time and memory, never precision


def is_auto_or_count(value: Any, least: int) -> bool:
    """``"auto"``, or an integer (not a bool) of at least ``least``."""
    return value == "auto" or (
        isinstance(value, int) and not isinstance(value, bool) and value >= least
    )


def _auto_or_count(where: str, value: Any, least: int) -> int | str:
    if is_auto_or_count(value, least):
        return value
    raise ConfigError(f'{where} must be "auto" or an integer >= {least}; got {value!r}')


def _run_value(name: str, value: Any) -> Any:
    """One ``[run]`` value, checked on its own."""
    if name in AUTO_OR_COUNT:
        return _auto_or_count(f"run.{name}", value, AUTO_OR_COUNT[name])
    if name == "layers":
        return layer_names("run.layers", list(value) if isinstance(value, tuple) else value)
    default = getattr(RunOptions(), name)
    what = "a table" if isinstance(default, dict) else f"a {type(default).__name__}"
    value = _expect(f"run.{name}", value, type(default), what)
    if name == "out" and not value.strip():
        raise ConfigError("run.out must name a folder; got an empty string")
    if name == "batch_size" and value < 1:
        raise ConfigError(f"run.batch_size must be at least 1; got {value}")
    if name in ("bootstrap", "seed", "max_views_per_forward", "min_free_mb") and value < 0:
        raise ConfigError(f"run.{name} must be >= 0; got {value}")
    if name == "bootstrap" and value > MAX_BOOTSTRAP:
        raise ConfigError(
            f"run.bootstrap must be at most {MAX_BOOTSTRAP:,} resamples; got {value:,} (1,000 "
            "give intervals to about 0.01; each resample reads every image of a cell)"
        )
    if name == "outputs":
        _choice("run.outputs", value, OUTPUT_LEVELS)
    if name == "outputs_topk" and value < 1:
        raise ConfigError(f"run.outputs_topk must be at least 1; got {value}")
    return value


def run_problems(run: RunOptions) -> list[str]:
    """Every problem of run options however they were made (a config, a CLI flag, or
    ``dataclasses.replace`` in Python), so that a study checks them all before it starts, even
    when every cell is already stored."""
    problems: list[str] = []
    for option in fields(RunOptions):
        _collected(problems, _run_value, option.name, getattr(run, option.name))
    return problems


def _run(raw: Any, problems: list[str]) -> RunOptions:
    """The run options; a bad key or value is recorded and its default kept."""
    if _collected(problems, _expect, "'run'", raw, Mapping, "a table: [run]") is None:
        return RunOptions()
    known = [f.name for f in fields(RunOptions)]
    _collected(problems, _check_keys, "run", raw, known)
    values = {}
    for name in (key for key in raw if key in known):
        value = _collected(problems, _run_value, name, raw[name])
        if value is not None:
            values[name] = value
    return RunOptions(**values)


def _unique(section: str, entries: list[Any]) -> None:
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise ConfigError(
                f'two {section} are named {entry.name!r}; give each a distinct name = "..."'
            )
        seen.add(entry.name)


def _one_source(datasets: list[DatasetEntry]) -> None:
    sources = [d.name for d in datasets if d.source]
    if len(sources) > 1:
        raise ConfigError(
            f"datasets {', '.join(map(repr, sources))} are each marked source = true; mark one: "
            "the labeled in-distribution set the accuracy estimators fit on"
        )
    held = [d.name for d in datasets if d.source and d.held_out]
    if held:
        raise ConfigError(
            f"dataset {held[0]!r} is both source and held_out; the source's labels are what "
            "the estimators fit on, so they cannot be held out"
        )


SECTIONS = {
    "models": _models,
    "datasets": _dataset,
    "transforms": lambda i, raw: _component("transforms", i, raw),
    "measures": lambda i, raw: _component("measures", i, raw),
    "layer_measures": lambda i, raw: _component("layer_measures", i, raw),
    "analyses": lambda i, raw: _component("analyses", i, raw),
}
REQUIRED_SECTIONS = ("models", "datasets", "transforms", "measures")


def parse_config(
    data: Mapping[str, Any], base_dir: Path = Path("."), problems: list[str] | None = None
) -> StudyConfig:
    """Check a config's structure and types, and report every problem at once; component
    names are checked by the study's plan.

    Raises a ``ConfigError`` listing every problem, unless ``problems`` is given: then they are
    recorded there and the config holds the entries that are right (so that ``invkit check``
    can still load those models and open those datasets)."""
    collect = problems is not None
    problems = problems if problems is not None else []
    _collected(problems, _check_keys, "config", data, list(TOP_LEVEL))
    sections: dict[str, list[Any]] = {}
    for section, build in SECTIONS.items():
        raw_entries = _collected(problems, _table_list, data, section) or []
        if not raw_entries and section in REQUIRED_SECTIONS:
            problems.append(f"the config lists no {section}; add at least one (see docs/config.md)")
        arguments = (base_dir,) if section == "models" else ()
        entries = [
            _collected(problems, build, i, raw, *arguments) for i, raw in enumerate(raw_entries)
        ]
        sections[section] = [
            each
            for entry in entries
            if entry is not None
            for each in (entry if isinstance(entry, list) else [entry])
        ]
        _collected(problems, _unique, section, sections[section])
    _collected(problems, _one_source, sections["datasets"])
    run = _run(data.get("run", {}), problems)
    layered = run.layers or any(m.layers for m in sections["models"])
    if layered and not sections["layer_measures"] and "layer_measures" not in data:
        sections["layer_measures"] = [ComponentEntry(n, n) for n in DEFAULT_LAYER_MEASURES]
    for section in ("measures", "layer_measures"):
        problems += [
            f"{section}[{entry.name!r}]: a label may not hold {LAYER_SEPARATOR!r} (it joins a "
            "layer measure to its layer in the store); rename it"
            for entry in sections[section]
            if LAYER_SEPARATOR in entry.name
        ]
    if sections["layer_measures"] and not layered:
        problems.append(
            "layer_measures are listed but no model names layers; add layers = [...] to a "
            "[[models]] entry or to [run] (docs/layers.md)"
        )
    config = StudyConfig(
        **{section: tuple(entries) for section, entries in sections.items()},
        run=run,
        base_dir=base_dir,
    )
    if problems and not collect:
        raise problems_error(problems)
    return config


def load_config(path: str | Path, problems: list[str] | None = None) -> StudyConfig:
    """Read and check a TOML study config; relative paths in it are relative to its folder.
    ``problems``: as ``parse_config`` (a file that is not TOML is always raised)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text: {error}") from None
    return parse_config(data, base_dir=path.resolve().parent, problems=problems)
