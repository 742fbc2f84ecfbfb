"""WTForms validators for crowdfund.text: the message shows beside the field,
and the field's data becomes the normalised text the services will store."""

from __future__ import annotations

from typing import Any

from wtforms.validators import StopValidation

from crowdfund.text import TextProblem, multi_line, single_line


class SingleLine:
    """Put before Length: the length counts the normalised text."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, form: Any, field: Any) -> None:
        try:
            field.data = single_line(field.data, self.label)
        except TextProblem as exc:
            raise StopValidation(exc.message) from exc


class MultiLine:
    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, form: Any, field: Any) -> None:
        try:
            field.data = multi_line(field.data, self.label)
        except TextProblem as exc:
            raise StopValidation(exc.message) from exc
