"""The quick start's broker: kombu's filesystem transport, with message files that appear only complete.

kombu's own `_put` creates the message file under its final `*.msg` name and then writes it. A worker
polling the folder can take the file in between, read zero bytes, and stop with "Unrecoverable error:
JSONDecodeError" (seen with `make run`: beat sends a watch-folder scan every 15 s, uploads a message
each). Here the message is written under a name the readers skip (`.partial` after `.msg`) and renamed
into place, which is atomic on one file system.

settings.py selects it (CELERY_BROKER_TRANSPORT) whenever CELERY_BROKER_URL is `filesystem://`.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PARTIAL_SUFFIX = ".partial"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL_SUFFIX
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as error:
            try:
                os.remove(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from error


class Transport(filesystem.Transport):
    Channel = Channel
