"""How a refused file is worded: ValidationError (a machine code and a human message), and the decoders'
own errors turned into messages about the file, never about this server."""

from __future__ import annotations

import re

from django.conf import settings


class ValidationError(Exception):
    """Raised with a machine code and a human message; ingest turns it into IngestError."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def too_many_pixels_from_pillow(error: Exception) -> ValidationError:
    return ValidationError(
        "too_many_pixels",
        f"The image has more pixels than allowed ({settings.SEM_MAX_IMAGE_PIXELS:,}): {short_message(error)}",
    )


def truncated_or_corrupt(error: Exception) -> ValidationError:
    text = str(error).lower()
    if any(word in text for word in ("truncated", "failed to read", "incomplete", "premature end", "not enough")):
        return ValidationError(
            "truncated",
            f"The image is truncated: its data ends early (incomplete upload or copy?).{error_detail(error)}",
        )
    return ValidationError("corrupt", f"The image data is corrupt and cannot be decoded{error_detail(error)}.")


def error_detail(error: Exception) -> str:
    """ " (what the decoder said)", or nothing when it said nothing a person can use: a bare number or key
    ("corrupt or unreadable (0)" came from an IndexError(0)), or an empty message."""
    text = short_message(error)
    informative = len(text) >= 4 and any(ch.isalpha() for ch in text) and text != type(error).__name__
    return f" ({text})" if informative else ""


def short_message(error: Exception, limit: int = 200) -> str:
    text = _without_server_details(str(error) or type(error).__name__)
    return text if len(text) <= limit else text[:limit] + "…"


# What a decoder's message may say about this server rather than the file: the path of the spooled upload
# ("cannot identify image file '/srv/var/upload-spool/sem-upload-1a2b.bin'"), any other absolute path, and
# the memory address of a buffer ("<_io.BytesIO object at 0x7f3a...>"). Clients see the file's problem only.
_QUOTED_PATH = re.compile(r"""(['"])(?:[A-Za-z]:[/\\]|/)[^'"]*\1""")
_BARE_PATH = re.compile(r"""(?<![\w.:/])(?:[A-Za-z]:)?/(?:[^\s'"(),;/]+/)+[^\s'"(),;]*""")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+\b")


def _without_server_details(text: str) -> str:
    text = _QUOTED_PATH.sub("the uploaded file", text)
    text = _BARE_PATH.sub("the uploaded file", text)
    text = _OBJECT_REPR.sub("the uploaded file", text)
    text = _ADDRESS.sub("", text)
    return text
