"""The quick start's filesystem broker (portal.broker_transport): a message file is never seen half-written.

kombu's own transport created `*.msg` under its final name before writing it; a polling worker could
take it empty and stop with "Unrecoverable error: JSONDecodeError" (seen in `make run`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from kombu import Connection

from portal.broker_transport import PARTIAL_SUFFIX, Transport

MESSAGES = 1500


def _options(folder) -> dict:
    return {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(folder)}


def test_a_reader_polling_the_folder_never_sees_an_incomplete_message(tmp_path):
    seen_broken: list[str] = []
    done = threading.Event()

    def poll():
        while not done.is_set():
            for name in os.listdir(tmp_path):
                if not name.endswith(".msg"):
                    continue  # what kombu's reader skips (it matches `<queue>.msg` after the first dot)
                try:
                    with open(tmp_path / name, "rb") as message:
                        json.loads(message.read())
                except FileNotFoundError:
                    continue
                except ValueError:
                    seen_broken.append(name)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        with Connection("filesystem://", transport=Transport, transport_options=_options(tmp_path)) as connection:
            queue = connection.SimpleQueue("gpu")
            for number in range(MESSAGES):
                queue.put({"number": number, "padding": "x" * 4000})
    finally:
        done.set()
        reader.join()

    assert seen_broken == []
    assert len([name for name in os.listdir(tmp_path) if name.endswith("gpu.msg")]) == MESSAGES
    assert not [name for name in os.listdir(tmp_path) if name.endswith(PARTIAL_SUFFIX)]


def test_messages_go_round_trip_through_the_transport(tmp_path):
    with Connection("filesystem://", transport=Transport, transport_options=_options(tmp_path)) as connection:
        queue = connection.SimpleQueue("default")
        queue.put({"hello": "world"})
        message = queue.get(timeout=5)
        message.ack()

    assert message.payload == {"hello": "world"}


def test_the_quick_start_settings_select_it(tmp_path):
    env = {**os.environ, "CELERY_BROKER_URL": "filesystem://", "SEM_VAR_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    script = "import django; django.setup(); from django.conf import settings; print(settings.CELERY_BROKER_TRANSPORT)"
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "portal.broker_transport:Transport"
