import pytest

from marc_keras.data.text_templates import TextTemplates

ML1M = TextTemplates(
    user_template="{gender!c}, age {age}, {occupation}. Recently watched: {history}.",
    history_item_template="{title}, {stars}",
    item_template="{title}. Genres: {genres!l}.",
)
USER = {"user_id": "1", "gender": "female", "age": "25-34", "occupation": "programmer"}
TOY_STORY = {
    "item_id": "1",
    "title": "Toy Story (1995)",
    "genres": "Animation|Children's|Comedy",
}
HEAT = {"item_id": "6", "title": "Heat (1995)", "genres": "Action|Crime|Thriller"}


def test_renders_the_ml1m_example_texts():
    history = [{**TOY_STORY, "rating": 5.0}, {**HEAT, "rating": 3.0}]
    assert ML1M.render_user(USER, history) == (
        "Female, age 25-34, programmer. Recently watched: "
        "Toy Story (1995), 5 stars; Heat (1995), 3 stars."
    )
    assert ML1M.render_item(TOY_STORY) == (
        "Toy Story (1995). Genres: Animation, Children's, Comedy."
    )


def test_stars_wording_and_label_only_history():
    history = [
        {**TOY_STORY, "rating": 1.0},
        {**HEAT, "rating": 4.5},
        {**HEAT, "rating": float("nan"), "label": 1},
        {**HEAT, "rating": None, "label": 0},
    ]
    text = ML1M.render_user(USER, history)
    assert text.endswith(
        "Toy Story (1995), 1 star; Heat (1995), 4.5 stars; "
        "Heat (1995), liked; Heat (1995), not liked."
    )


def test_rating_format_spec_and_label_field():
    templates = TextTemplates(
        user_template="{history}",
        history_item_template="{item_id}:{rating:.1f}:{label}",
        item_template="{item_id}",
        history_separator=" | ",
    )
    history = [{"item_id": "a", "rating": 4, "label": 1}, {"item_id": "b", "rating": 2}]
    assert templates.render_user({}, history) == "a:4.0:1 | b:2.0:"


def test_empty_history_uses_placeholder_text():
    assert ML1M.render_user(USER, []) == (
        "Female, age 25-34, programmer. Recently watched: nothing yet."
    )


def test_whitespace_is_collapsed():
    templates = TextTemplates(
        user_template="  {history}\n", history_item_template="{title}", item_template="{title}\t!"
    )
    assert templates.render_item({"title": " Heat \n (1995) "}) == "Heat (1995) !"


def test_long_text_is_cut_at_a_word_boundary():
    templates = TextTemplates(
        user_template="{history}",
        history_item_template="{title}",
        item_template="{title}",
        max_chars=12,
    )
    assert templates.render_item({"title": "alpha beta gamma"}) == "alpha beta"
    assert templates.render_item({"title": "alpha beta12 gamma"}) == "alpha beta12"
    assert templates.render_item({"title": "abcdefghijklmnopq"}) == "abcdefghijkl"
    assert templates.render_item({"title": "short"}) == "short"


@pytest.mark.parametrize(
    "template_name, render",
    [
        ("item_template", lambda t: t.render_item(TOY_STORY)),
        ("user_template", lambda t: t.render_user(USER, [])),
        ("history_item_template", lambda t: t.render_user(USER, [{**HEAT, "rating": 3}])),
    ],
)
def test_unknown_placeholder_names_it_and_the_fields(template_name, render):
    templates = TextTemplates(**{**ML1M.to_dict(), template_name: "{director} {title}"})
    with pytest.raises(ValueError, match=r"'\{director\}'") as error:
        render(templates)
    message = str(error.value)
    assert template_name in message
    assert "Available fields" in message
    assert "'genres'" in message or "'gender'" in message


def test_check_fields_fails_before_rendering():
    ML1M.check_fields(USER, TOY_STORY)
    with pytest.raises(ValueError, match=r"'\{genres\}'.*Available fields: \['item_id', 'title'\]"):
        ML1M.check_fields(USER, ["item_id", "title"])
    with pytest.raises(ValueError, match=r"'\{occupation\}'"):
        ML1M.check_fields(["user_id", "gender", "age"], TOY_STORY)


@pytest.mark.parametrize(
    "template, message",
    [
        ("{title", "not a valid str.format template"),
        ("{} stars", "positional placeholder"),
        ("{0}", "positional placeholder"),
        ("{title!x}", "unknown conversion '!x'"),
    ],
)
def test_malformed_templates_are_rejected_at_construction(template, message):
    with pytest.raises(ValueError, match=message):
        TextTemplates(user_template="{history}", history_item_template="x", item_template=template)


def test_literal_braces_survive():
    templates = TextTemplates(
        user_template="{history}", history_item_template="x", item_template="{{json}} {title}"
    )
    assert templates.render_item({"title": "Heat"}) == "{json} Heat"


def test_dict_round_trip_and_validation():
    config = ML1M.to_dict()
    assert config["max_chars"] == 2000
    assert config["history_separator"] == "; "
    assert TextTemplates.from_dict(config) == ML1M
    with pytest.raises(ValueError, match=r"Unknown TextTemplates keys \['colour'\]"):
        TextTemplates.from_dict({**config, "colour": "red"})
    with pytest.raises(ValueError, match=r"missing the keys \['item_template'\]"):
        TextTemplates.from_dict({k: v for k, v in config.items() if k != "item_template"})
    with pytest.raises(ValueError, match="max_chars must be a positive integer"):
        TextTemplates.from_dict({**config, "max_chars": 0})
