"""Rewrite every format version 1 model artifact (a torch pickle container) in the safetensors format.

The workers do this by themselves for the production model before they load it; this command does
it for every version at once (say, after an upgrade, so that a roll back finds safetensors files too).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from classifier.artifact import ArtifactError


class Command(BaseCommand):
    help = "Upgrade model artifacts of format version 1 (torch pickle) to the safetensors format."

    def handle(self, *args, **options):
        from portal.services.learning.artifacts import upgrade_all

        try:
            upgraded = upgrade_all()
        except ArtifactError as error:
            raise CommandError(str(error)) from error
        for model in upgraded:
            self.stdout.write(f"v{model.version}: {model.artifact_path}")
        self.stdout.write(f"{len(upgraded)} artifact(s) upgraded.")
