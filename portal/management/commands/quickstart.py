"""First-run setup for `make run`: migrate, an admin login, the demo data, schedules, a first model.

Idempotent: a second `make run` reuses the database, the login and the model already there.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from portal.models import ModelVersion, SEMImage, TrainingRun

ADMIN_USERNAME = "admin"


class Command(BaseCommand):
    help = "Prepare the embedded quick start: database, admin login, demo data, schedules and first training."

    def add_arguments(self, parser):
        parser.add_argument("--per-class", type=int, default=24, help="Demo images per category (default 24)")
        parser.add_argument("--no-train", action="store_true", help="Do not queue the first training")

    def handle(self, *args, per_class: int, no_train: bool, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write(f"Login: {self._ensure_admin()}")
        if not SEMImage.objects.exists():
            self.stdout.write(f"Generating and importing the demo data set ({per_class} images per category)...")
            call_command("make_demo_data", "--import", "--per-class", str(per_class))
        call_command("setup_schedules")
        if not no_train:
            self._queue_first_training()

    def _ensure_admin(self) -> str:
        credentials = Path(settings.VAR_DIR) / "admin-credentials.txt"
        User = get_user_model()
        if User.objects.filter(username=ADMIN_USERNAME).exists() and credentials.exists():
            return credentials.read_text().strip()
        password = secrets.token_urlsafe(12)
        user, _ = User.objects.get_or_create(username=ADMIN_USERNAME, defaults={"email": "admin@localhost"})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        credentials.parent.mkdir(parents=True, exist_ok=True)
        credentials.write_text(f"{ADMIN_USERNAME} / {password}\n")
        credentials.chmod(0o600)
        return credentials.read_text().strip()

    def _queue_first_training(self) -> None:
        if ModelVersion.objects.exists() or TrainingRun.objects.filter(active=True).exists():
            return
        from portal.services.learning.training import request_training

        run = request_training(trigger=TrainingRun.Trigger.BOOTSTRAP, force=True).run
        if run is not None:
            self.stdout.write(f"Queued the first training (run {run.pk}) on the demo data.")
