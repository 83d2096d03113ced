"""The JSON parser of every API endpoint: DRF's, plus the two ways a body of valid JSON syntax got a 500.

- Deep nesting: the standard json module recurses once per level, so `[[[[...]]]]` 5,000 levels deep
  raises RecursionError, which DRF does not expect of a parser.
- Lone surrogates: `"\\ud800"` is valid JSON but no Unicode text; it parses to a str that cannot be
  encoded as UTF-8, so the first error message quoting it (or the database) fails.
Both are a 400 "parse_error" here, before any view sees the data.
"""

from __future__ import annotations

import json

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ParseError(
                "JSON parse error - the body holds a lone surrogate (\\ud800-\\udfff), not text."
            ) from None
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        return data
