"""The flow data structure (mmllm_course.viz.flow): the chaining and map-order rules, bad input, the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from mmllm_course.viz import PARTS, FlowStage, check_flow, draw_flow, format_shape


def _capstone_like() -> list[FlowStage]:
    return [
        FlowStage("waveform", "input", ("B", 16000), ("B", 16000)),
        FlowStage("log-mel", "encoder", ("B", 16000), ("B", 80, 100)),
        FlowStage("audio encoder", "encoder", ("B", 80, 100), ("B", 50, 64)),
        FlowStage("MLP bridge", "input bridge", ("B", 50, 64), ("B", 50, 64)),
        FlowStage("LM", "LLM backbone", ("B", 50, 64), ("B", "T", 64)),
        FlowStage("[3D] hidden states", "LLM backbone", ("B", "T", 64), ("B", 4, 64)),
        FlowStage("output projector", "output projector", ("B", 4, 64), ("B", 2, 64)),
        FlowStage("point diffusion decoder", "generator", ("B", 2, 64), ("B", 256, 3)),
    ]


def test_valid_flow_is_returned_as_a_list():
    stages = _capstone_like()
    out = check_flow(tuple(stages))
    assert out == stages and isinstance(out, list)
    assert PARTS == ("encoder", "input bridge", "LLM backbone", "output projector", "generator")


def test_shapes_are_normalised_to_tuples_and_compared_by_value():
    a = FlowStage("a", "encoder", ["B", 3], ["B", 4])
    b = FlowStage("b", "input bridge", ("B", 4), (" B ", 5))
    assert a.input_shape == ("B", 3) and b.output_shape == ("B", 5)
    assert check_flow([a, b]) == [a, b]
    assert hash(a) == hash(FlowStage("a", "encoder", ("B", 3), ("B", 4)))  # frozen: usable as a key


def test_chaining_rule_names_the_stage():
    stages = _capstone_like()
    # transposed mel: (B, 100, 80) where the encoder wants (B, 80, 100)
    stages[1] = FlowStage("log-mel", "encoder", ("B", 16000), ("B", 100, 80))
    with pytest.raises(ValueError, match=r"stage 2 \('audio encoder'\).*\(B, 80, 100\).*\(B, 100, 80\)"):
        check_flow(stages)


def test_symbolic_dim_differs_from_number():
    with pytest.raises(ValueError, match="does not match"):
        check_flow([FlowStage("a", "encoder", ("B", 3), ("B", 4)), FlowStage("b", "encoder", ("B", "N"), ("B", 4))])


def test_backwards_part_is_refused():
    stages = _capstone_like()
    stages[3], stages[4] = (FlowStage("LM", "LLM backbone", ("B", 50, 64), ("B", 50, 64)),
                            FlowStage("MLP bridge", "input bridge", ("B", 50, 64), ("B", "T", 64)))
    with pytest.raises(ValueError, match=r"stage 4 \('MLP bridge'\): part 'input bridge' comes after 'LLM backbone'"):
        check_flow(stages)


def test_output_before_generator_is_refused():
    with pytest.raises(ValueError, match="comes after 'output'"):
        check_flow([FlowStage("cloud", "output", ("B", 4), ("B", 4)), FlowStage("dec", "generator", ("B", 4), ("B", 4))])


def test_unknown_part_names_the_stage():
    stages = _capstone_like()
    stages[3] = FlowStage("MLP bridge", "projector", ("B", 50, 64), ("B", 50, 64))
    with pytest.raises(ValueError, match=r"stage 3 \('MLP bridge'\): unknown part 'projector'"):
        check_flow(stages)


@pytest.mark.parametrize("bad", [[], ()])
def test_empty_flow_is_refused(bad):
    with pytest.raises(ValueError, match="at least one"):
        check_flow(bad)


@pytest.mark.parametrize("bad", [None, "waveform", 3, {"a": 1}])
def test_not_a_sequence_is_refused(bad):
    with pytest.raises(TypeError, match="list of FlowStage"):
        check_flow(bad)


def test_single_stage_is_not_a_list_of_stages():
    with pytest.raises(TypeError, match="list of FlowStage"):
        check_flow(_capstone_like()[0])


def test_non_stage_item_is_refused():
    with pytest.raises(TypeError, match=r"stages\[1\] must be a FlowStage, got a dict"):
        check_flow([_capstone_like()[0], {"name": "log-mel"}])


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(name="", part="encoder", input_shape=(1,), output_shape=(1,)), "name must be a non-empty str"),
        (dict(name=3, part="encoder", input_shape=(1,), output_shape=(1,)), "name must be a non-empty str"),
        (dict(name="a", part=None, input_shape=(1,), output_shape=(1,)), "part must be a str"),
        (dict(name="a", part="encoder", input_shape="B, 3", output_shape=(1,)), "input_shape must be a tuple"),
        (dict(name="a", part="encoder", input_shape=(1,), output_shape=None), "output_shape must be a tuple"),
        (dict(name="a", part="encoder", input_shape=("B", 3.0), output_shape=(1,)), "must hold ints and dim names"),
        (dict(name="a", part="encoder", input_shape=(True,), output_shape=(1,)), "must hold ints and dim names"),
        (dict(name="a", part="encoder", input_shape=(1,), output_shape=(2, 0)), "positive sizes"),
        (dict(name="a", part="encoder", input_shape=(), output_shape=(1,)), "at least one dim"),
        (dict(name="a", part="encoder", input_shape=("",), output_shape=(1,)), "empty dim name"),
        (dict(name="a", part="encoder", input_shape=(1,), output_shape=(1,), note=5), "note must be a str"),
    ],
)
def test_bad_stage_fields(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):  # InputTypeError is also a ValueError
        FlowStage(**kwargs)


def test_format_shape():
    assert format_shape(("B", 16000)) == "(B, 16000)"
    assert format_shape((3,)) == "(3)"


def test_draw_flow_draws_one_box_per_stage_and_every_shape():
    stages = _capstone_like()
    fig = draw_flow(stages)
    try:
        ax = fig.axes[0]
        texts = [t.get_text() for t in ax.texts]
        for s in stages:
            assert s.name in " ".join(texts).replace("\n", " ")
        # one arrow into each box and one out of the last, each labelled with the shape it carries
        assert len(ax.patches) == 2 * len(stages) + 1
        for shape in ["(B, 16000)", "(B, 80, 100)", "(B, 2, 64)", "(B, 256, 3)"]:
            assert shape in texts
        colours = {p.get_facecolor() for p in ax.patches if hasattr(p, "get_boxstyle")}
        assert len(colours) == 6  # input + the five parts (the output end is not in this flow)
    finally:
        plt.close(fig)


def test_draw_flow_into_given_axes_and_refuses_a_bad_flow():
    fig, ax = plt.subplots()
    try:
        assert draw_flow(_capstone_like()[:3], ax=ax) is fig
        with pytest.raises(ValueError, match="does not match"):
            draw_flow([FlowStage("a", "encoder", (1,), (2,)), FlowStage("b", "encoder", (3,), (2,))], ax=ax)
    finally:
        plt.close(fig)
