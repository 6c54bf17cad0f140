"""Label config parsing with LabelInterface, and the COCO -> project label mapping."""

from __future__ import annotations

import pytest

from simages_label_studio.label_config import parse_label_config

RECT_AND_CHOICES = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Vehicle" predicted_values="car,truck"/>
    <Label value="PERSON"/>
    <Label value="Tree"/>
  </RectangleLabels>
  <Choices name="scene" toName="image" choice="multiple">
    <Choice value="Cat"/>
    <Choice value="dog"/>
  </Choices>
</View>
"""


def test_rectangles_and_choices_are_parsed_with_their_mapping():
    schema = parse_label_config(RECT_AND_CHOICES)
    assert schema.servable and len(schema.targets) == 1
    target = schema.targets[0]
    assert (target.name, target.value_key) == ("image", "image")
    (rect,) = target.rectangles
    assert (rect.kind, rect.from_name, rect.to_name) == ("rectanglelabels", "label", "image")
    # predicted_values, then case-insensitive exact names; "Tree" is no COCO class and maps to nothing.
    assert dict(rect.class_to_label) == {"car": "Vehicle", "truck": "Vehicle", "person": "PERSON"}
    assert rect.label_for("Person") == "PERSON" and rect.label_for("dog") is None
    (choices,) = target.choices
    assert choices.multiple and dict(choices.class_to_label) == {"cat": "Cat", "dog": "dog"}


def test_environment_mapping_takes_precedence_over_the_config():
    schema = parse_label_config(RECT_AND_CHOICES, {"Vehicle": ["bus"], "Tree": ["potted plant"]})
    rect = schema.targets[0].rectangles[0]
    assert dict(rect.class_to_label) == {"bus": "Vehicle", "person": "PERSON", "potted plant": "Tree"}


def test_single_choice_is_the_default():
    config = '<View><Image name="i" value="$img"/><Choices name="c" toName="i"><Choice value="cat"/></Choices></View>'
    (target,) = parse_label_config(config).targets
    assert target.value_key == "img" and not target.choices[0].multiple and not target.needs_boxes


def test_several_image_tags_each_get_their_controls():
    config = """<View>
      <Image name="left" value="$left"/><Image name="right" value="$right"/>
      <RectangleLabels name="boxes_left" toName="left"><Label value="cat"/></RectangleLabels>
      <Choices name="what_right" toName="right"><Choice value="horse"/></Choices>
    </View>"""
    schema = parse_label_config(config)
    by_name = {t.name: t for t in schema.targets}
    assert by_name["left"].rectangles[0].from_name == "boxes_left" and not by_name["left"].choices
    assert by_name["right"].choices[0].from_name == "what_right" and not by_name["right"].rectangles


def test_a_class_claimed_twice_goes_to_the_first_label_and_is_reported():
    config = """<View><Image name="i" value="$image"/>
      <RectangleLabels name="r" toName="i"><Label value="Animal" predicted_values="cat"/><Label value="cat"/></RectangleLabels>
    </View>"""
    schema = parse_label_config(config)
    assert dict(schema.targets[0].rectangles[0].class_to_label) == {"cat": "Animal"}
    assert any("claimed by 'Animal' and 'cat'" in p for p in schema.problems)


def test_predicted_values_naming_unknown_classes_are_reported():
    config = """<View><Image name="i" value="$image"/>
      <RectangleLabels name="r" toName="i"><Label value="Car" predicted_values="car,spaceship"/></RectangleLabels>
    </View>"""
    schema = parse_label_config(config)
    assert dict(schema.targets[0].rectangles[0].class_to_label) == {"car": "Car"}
    assert any("'spaceship', which is not a COCO class" in p for p in schema.problems)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ("<View><Text name='t' value='$t'/><Choices name='c' toName='t'><Choice value='cat'/></Choices></View>",
         "has no <Image> tag"),
        ("<View><Image name='i' value='$image'/><PolygonLabels name='p' toName='i'><Label value='cat'/></PolygonLabels></View>",
         "PolygonLabels 'p' is not served"),
        ("<View", "cannot be parsed"),
    ],
)  # fmt: skip
def test_configs_it_cannot_serve_say_why_and_do_not_raise(config, problem):
    schema = parse_label_config(config)
    assert not schema.servable
    assert any(problem in p for p in schema.problems), schema.problems


def test_digest_changes_with_the_label_set_only():
    a = parse_label_config(RECT_AND_CHOICES).digest()
    assert a == parse_label_config(RECT_AND_CHOICES.replace("  ", " ")).digest()
    assert a != parse_label_config(RECT_AND_CHOICES.replace('predicted_values="car,truck"', "")).digest()
