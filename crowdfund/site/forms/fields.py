"""Form fields that parse the way crowdfund/params.py does."""

from __future__ import annotations

from typing import Any

from wtforms import DateField

from crowdfund.params import parse_date


class IsoDateField(DateField):
    """A form's date, parsed by `parse_date` (the field shows the message)."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        if not valuelist or not valuelist[0]:
            self.data = None
            return
        try:
            self.data = parse_date(str(valuelist[0]))
        except ValueError as exc:
            self.data = None
            raise ValueError(str(exc)) from exc
