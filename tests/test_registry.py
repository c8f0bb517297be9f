"""Components: found by name, described from their docstrings and signatures, clear errors."""

from __future__ import annotations

import pytest

import invkit
from invkit.errors import ComponentParameterError, UnknownComponentError


def test_builtin_components_of_every_kind_are_listed():
    names = {(c.kind, c.name) for c in invkit.list_components()}
    expected = {
        ("transform", "rotation"),
        ("transform", "grayscale"),
        ("transform", "compose"),
        *(("transform", t) for t in ("translation", "scale", "flip", "jpeg", "gaussian_blur")),
        *(("measure", m) for m in ("ei", "agreement", "js", "kl", "l2", "cosine")),
        ("measure", "lie_derivative"),
        ("analysis", "model_centric"),
        ("analysis", "dataset_centric"),
        ("analysis", "predict_accuracy"),
        ("analysis", "estimate_accuracy"),
        *(("estimator", e) for e in ("ac", "doc", "atc_mc", "atc_ne", "gde", "aline_s")),
        *(("estimator", e) for e in ("aline_d", "nuclear_norm", "avg_energy", "mde")),
        ("executor", "local"),
    }
    assert expected <= names
    assert [c.name for c in invkit.list_components("analyses")] == [
        "dataset_centric",
        "estimate_accuracy",
        "invariance_profile",
        "layer_profile",
        "model_centric",
        "predict_accuracy",
    ]


def test_component_description_and_parameters_come_from_the_code():
    rotation = invkit.get_component("transform", "rotation")
    assert rotation.plugin == "invkit.builtins.transforms"
    assert rotation.description.startswith("Rotate counter-clockwise")
    params = {p.name: p for p in rotation.params}
    assert params["angles"].default == (90, 180, 270)
    assert params["interpolation"].type == "str"
    assert rotation.to_dict()["params"][0] == {
        "name": "angles",
        "type": "float | Sequence[float]",
        "required": False,
        "default": [90, 180, 270],
    }


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownComponentError) as error:
        invkit.get_transform("rotaton")
    message = str(error.value)
    assert "unknown transform 'rotaton'" in message
    assert "did you mean 'rotation'" in message  # first: the closest
    assert "invkit list transforms" in message
    with pytest.raises(UnknownComponentError, match="known: .*agreement.*cosine.*ei"):
        invkit.get_measure("zzzzzz")
    with pytest.raises(
        UnknownComponentError, match="unknown model loader 'tim': did you mean 'timm'"
    ):
        invkit.load_model("tim:resnet18")  # a spec's scheme names its loader
    with pytest.raises(UnknownComponentError, match="unknown dataset loader 'imagefoldr'"):
        invkit.load_dataset("imagefoldr:/data")


def test_unknown_parameters_name_the_closest_one():
    with pytest.raises(
        ComponentParameterError, match="no parameter 'angle'; did you mean 'angles'"
    ):
        invkit.get_transform("rotation", angle=[90])
    with pytest.raises(ComponentParameterError, match="needs the parameter.*steps"):
        invkit.get_transform("compose")


def test_unknown_kind_and_unknown_model_scheme_are_clear():
    with pytest.raises(invkit.InvkitError, match="unknown component kind 'widgets'"):
        invkit.list_components("widgets")
    with pytest.raises(invkit.InvkitError, match="spec ':x' has no scheme"):
        invkit.load_model(":x")


def test_a_description_is_the_docstrings_whole_first_sentence():
    from invkit.registry import first_sentence

    doc = """COT: 1 − the optimal-transport cost between the target's softmax vectors and the
    source's label distribution (Lu et al., NeurIPS 2023), e.g. for ImageNet.
    A second sentence. A third.

    Details."""
    assert first_sentence(doc) == (
        "COT: 1 − the optimal-transport cost between the target's softmax vectors and the "
        "source's label distribution (Lu et al., NeurIPS 2023), e.g. for ImageNet."
    )
    cot = invkit.get_component("estimator", "cot").description
    assert cot.endswith("(Lu et al., NeurIPS 2023).")  # two lines of the docstring, joined
