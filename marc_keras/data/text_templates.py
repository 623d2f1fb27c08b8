"""Text templates that turn user and item rows into LLM input texts."""

from __future__ import annotations

import dataclasses
import functools
import math
import string
from collections.abc import Container, Iterable, Mapping
from typing import Any

# Conversions on top of str.format's !s/!r/!a: `!c` capitalizes the first
# letter ("female" -> "Female") and `!l` prints a "|"-joined multi-value
# attribute as a comma list ("Animation|Comedy" -> "Animation, Comedy").
_CONVERSIONS = {None, "s", "r", "a", "c", "l"}
_HISTORY_FIELDS = ("rating", "stars", "label")


def _convert(value: Any, conversion: str) -> str:
    if conversion == "c":
        text = str(value)
        return text[:1].upper() + text[1:]
    return ", ".join(part for part in str(value).split("|") if part)


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """A template rewritten for the C-level `str.format_map`.

    Placeholders with the custom conversions become synthetic keys whose
    values are converted in Python before formatting; the rest is left to
    `str.format_map`, which is several times faster than `string.Formatter`.
    """

    format_string: str
    fields: tuple[str, ...]
    converted: tuple[tuple[str, str, str], ...]


_PARSER = string.Formatter()


@functools.lru_cache(maxsize=64)
def _compile(template: str, template_name: str) -> _Compiled:
    try:
        parsed = list(_PARSER.parse(template))
    except ValueError as error:
        raise ValueError(
            f"TextTemplates.{template_name} is not a valid str.format "
            f"template ({error}): {template!r}. Write literal braces as "
            "'{{' and '}}'."
        ) from error
    parts: list[str] = []
    fields: list[str] = []
    converted: list[tuple[str, str, str]] = []
    for literal, field_name, format_spec, conversion in parsed:
        parts.append(literal.replace("{", "{{").replace("}", "}}"))
        if field_name is None:
            continue
        root = field_name.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise ValueError(
                f"TextTemplates.{template_name} has a positional placeholder "
                f"'{{{field_name}}}' in {template!r}; name the field instead, "
                "e.g. '{title}'."
            )
        if conversion not in _CONVERSIONS:
            raise ValueError(
                f"TextTemplates.{template_name} uses the unknown conversion "
                f"'!{conversion}' in {template!r}; use !c (capitalize), "
                "!l ('a|b' -> 'a, b'), !s, !r or !a."
            )
        fields.append(root)
        spec = f":{format_spec}" if format_spec else ""
        if conversion in ("c", "l"):
            key = f"_converted_{len(converted)}"
            converted.append((key, field_name, conversion))
            parts.append(f"{{{key}{spec}}}")
        else:
            suffix = f"!{conversion}" if conversion else ""
            parts.append(f"{{{field_name}{suffix}{spec}}}")
    return _Compiled("".join(parts), tuple(fields), tuple(converted))


def _stars(rating: float, label: int | None) -> str:
    if not math.isnan(rating):
        return f"{rating:g} star" if rating == 1 else f"{rating:g} stars"
    # Label-only data has no rating to print; say what the label means.
    if label is None:
        return ""
    return "liked" if int(label) == 1 else "not liked"


@dataclasses.dataclass(frozen=True)
class TextTemplates:
    """Templates that render users and items into texts for the LLM encoder.

    Templates use `str.format` syntax with named placeholders. Besides the
    standard `!s`/`!r`/`!a` conversions, `{field!c}` capitalizes the first
    letter of the value and `{field!l}` prints a "|"-joined multi-value
    attribute as a comma separated list. Rendered texts have their
    whitespace collapsed to single spaces; a text longer than `max_chars`
    is cut at the last word boundary before the limit (or hard at the limit
    when the text has no space), with no ellipsis added, so a cut drops the
    last history items written (`KARSplit` writes the most recent first).

    Args:
        user_template: Template over the user attribute columns (and
            `user_id`) plus `{history}`, the rendered history items.
        history_item_template: Template for one history item, over the item
            columns (and `item_id`) plus `{rating}` (float, NaN when
            unknown), `{stars}` ("5 stars", or "liked"/"not liked" when only
            a label is known) and `{label}` (0/1).
        item_template: Template over the item columns (and `item_id`).
        history_separator: Joins rendered history items.
        empty_history: Stands in for `{history}` when a user has none.
        max_chars: Longest rendered text, in characters.

    Example:
    ```python
    templates = TextTemplates(
        user_template="{gender!c}, age {age}. Recently watched: {history}.",
        history_item_template="{title}, {stars}",
        item_template="{title}. Genres: {genres!l}.",
    )
    templates.render_item({"title": "Heat (1995)", "genres": "Action|Crime"})
    # 'Heat (1995). Genres: Action, Crime.'
    ```
    """

    user_template: str
    history_item_template: str
    item_template: str
    history_separator: str = "; "
    empty_history: str = "nothing yet"
    max_chars: int = 2000

    def __post_init__(self) -> None:
        for name in ("user_template", "history_item_template", "item_template"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(
                    f"TextTemplates.{name} must be a string, got {type(value).__name__}."
                )
            _compile(value, name)
        max_chars = self.max_chars
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise ValueError(
                f"TextTemplates.max_chars must be a positive integer, got {max_chars!r}."
            )

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> TextTemplates:
        """Build templates from a config mapping (e.g. parsed YAML/JSON).

        Args:
            config: Mapping of field names to values; see the class
                arguments. Unknown keys are rejected.

        Returns:
            A `TextTemplates`.

        Example:
        ```python
        templates = TextTemplates.from_dict(json.loads(path.read_text()))
        ```
        """
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ValueError(
                f"Unknown TextTemplates keys {unknown}; valid keys are {sorted(fields)}."
            )
        required = {
            field.name for field in dataclasses.fields(cls) if field.default is dataclasses.MISSING
        }
        missing = sorted(required - set(config))
        if missing:
            raise ValueError(f"TextTemplates config is missing the keys {missing}.")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        """Return the templates as a plain dict that `from_dict` reads back.

        Returns:
            A dict of field names to values.

        Example:
        ```python
        path.write_text(json.dumps(templates.to_dict()))
        ```
        """
        return dataclasses.asdict(self)

    def check_fields(self, user_fields: Iterable[str], item_fields: Iterable[str]) -> None:
        """Check that every placeholder names an available field.

        Call this before rendering many rows to fail early.

        Args:
            user_fields: User attribute column names (with `user_id`).
            item_fields: Item attribute column names (with `item_id`).

        Example:
        ```python
        templates.check_fields(data.users.columns, data.items.columns)
        ```
        """
        item_fields = set(item_fields)
        self._check("user_template", set(user_fields) | {"history"})
        self._check("history_item_template", item_fields | set(_HISTORY_FIELDS))
        self._check("item_template", item_fields)

    def render_user(
        self, user_row: Mapping[str, Any], history_rows: list[Mapping[str, Any]]
    ) -> str:
        """Render a user's text from demographics and history items.

        Args:
            user_row: The user's attributes, keyed by column name.
            history_rows: History items in the order to write them; each
                holds the item's attributes plus `rating` (and optionally
                `label`).

        Returns:
            The user text, whitespace collapsed and cut to `max_chars`.

        Example:
        ```python
        templates.render_user(
            {"gender": "female", "age": "25-34", "occupation": "programmer"},
            [{"title": "Toy Story (1995)", "rating": 5.0}],
        )
        ```
        """
        items = [self._render_history_item(row) for row in history_rows]
        history = self.history_separator.join(items) if items else self.empty_history
        values = dict(user_row)
        values["history"] = history
        return self._finish(self._format("user_template", values))

    def render_item(self, item_row: Mapping[str, Any]) -> str:
        """Render an item's text from its attributes.

        Args:
            item_row: The item's attributes, keyed by column name.

        Returns:
            The item text, whitespace collapsed and cut to `max_chars`.

        Example:
        ```python
        templates.render_item({"title": "Heat (1995)", "genres": "Action|Crime"})
        ```
        """
        return self._finish(self._format("item_template", dict(item_row)))

    def _render_history_item(self, row: Mapping[str, Any]) -> str:
        values = dict(row)
        rating = values.get("rating")
        rating = float("nan") if rating is None else float(rating)
        label = values.get("label")
        values["rating"] = rating
        values["stars"] = _stars(rating, label)
        values.setdefault("label", "" if label is None else label)
        return self._format("history_item_template", values)

    def _check(self, template_name: str, available: Container[str]) -> None:
        template = getattr(self, template_name)
        for name in _compile(template, template_name).fields:
            if name not in available:
                raise ValueError(
                    f"TextTemplates.{template_name} uses the placeholder "
                    f"'{{{name}}}', which is not an available field. "
                    f"Available fields: {sorted(available)}. Fix the template "
                    "or add the column to the table."
                )

    def _format(self, template_name: str, values: dict[str, Any]) -> str:
        self._check(template_name, values)
        compiled = _compile(getattr(self, template_name), template_name)
        for key, field_name, conversion in compiled.converted:
            value, _ = _PARSER.get_field(field_name, (), values)
            values[key] = _convert(value, conversion)
        return compiled.format_string.format_map(values)

    def _finish(self, text: str) -> str:
        text = " ".join(text.split())
        if len(text) <= self.max_chars:
            return text
        cut = text.rfind(" ", 0, self.max_chars + 1)
        return text[:cut] if cut > 0 else text[: self.max_chars]
