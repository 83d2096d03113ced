"""A JSON body means what its schema says (issue 11, item 7).

DRF converts generously: `"note": 0` becomes the string "0", `"force": "yes"` becomes True, `"project": "1"`
the id 1. The OpenAPI schema types those fields as string, boolean and integer, so a client that follows
the schema and one that does not would both be served, and a value of the wrong type is silently
reinterpreted. `StrictJSONTypes` refuses, in a JSON body, a value whose JSON type is not the field's
(null only where the field allows it); form bodies (everything a string) are left to the fields.
"""

from __future__ import annotations

from django.http import QueryDict
from rest_framework import relations, serializers

_STRING_FIELDS = (
    serializers.CharField,
    serializers.ChoiceField,
    serializers.DateTimeField,
    serializers.DateField,
    serializers.TimeField,
    serializers.DurationField,
    serializers.UUIDField,
    relations.SlugRelatedField,
)
_NUMBER_FIELDS = (serializers.FloatField, serializers.DecimalField)


def _expected(field) -> tuple[tuple[type, ...], str] | None:
    """(accepted Python types of the parsed JSON value, what to call them), or None: no check."""
    if isinstance(field, serializers.BooleanField):
        return (bool,), "a boolean (true or false)"
    if isinstance(field, (serializers.IntegerField, relations.PrimaryKeyRelatedField)):
        return (int,), "an integer"
    if isinstance(field, _NUMBER_FIELDS):
        return (int, float), "a number"
    if isinstance(field, (serializers.ListField, serializers.MultipleChoiceField, relations.ManyRelatedField)):
        return (list,), "a list"
    if isinstance(field, serializers.MultipleChoiceField):
        return (list,), "a list"
    if isinstance(field, _STRING_FIELDS):
        return (str,), "a string"
    return None  # JSONField, DictField, files, nested serializers: their own checks


class StrictJSONTypes:
    """Mixin for Serializer: a JSON value of the wrong type is a field error, never converted."""

    def to_internal_value(self, data):
        if isinstance(data, dict) and not isinstance(data, QueryDict):
            errors = {}
            for name, field in self.fields.items():
                if field.read_only or name not in data:
                    continue
                value = data[name]
                if value is None:
                    continue  # the field says whether null is allowed
                expected = _expected(field)
                if expected is None:
                    continue
                types, described = expected
                if isinstance(value, bool) and bool not in types or not isinstance(value, types):
                    errors[name] = [
                        serializers.ErrorDetail(f"Expected {described}, not {_json_type(value)}.", code="invalid")
                    ]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
