"""Inbox (issue 16): what the watch folders picked up. Admins see every folder, curators those of the projects
they curate; both may pause and resume a folder (POST + CSRF)."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portal.models import WatchedFile, WatchFolder
from portal.permissions import curated_projects
from portal.services.ingestion.watch import folder_stats
from portal.web.access import curator_required

RECENT_REFUSED = 50
RECENT_STORED = 10


def _folders(user):
    return WatchFolder.objects.filter(project__in=curated_projects(user)).select_related("project", "fixed_sample")


@curator_required(needed_for="The inbox (what the watch folders picked up)")
def inbox(request):
    folders = []
    for folder in _folders(request.user):
        files = WatchedFile.objects.filter(folder=folder).select_related("image")
        folders.append(
            {
                "folder": folder,
                "stats": folder_stats(folder),
                "refused": files.filter(status=WatchedFile.Status.REFUSED).order_by("-finished_at")[:RECENT_REFUSED],
                "recent": files.filter(status__in=[WatchedFile.Status.STORED, WatchedFile.Status.DUPLICATE]).order_by(
                    "-finished_at"
                )[:RECENT_STORED],
            }
        )
    return render(request, "portal/inbox.html", {"folders": folders})


@curator_required(needed_for="Pausing a watch folder")
@require_POST
def inbox_toggle(request, pk: int):
    # Another project's folder is as unknown as a missing one: a 403 would confirm that the id exists.
    folder = get_object_or_404(_folders(request.user), pk=pk)
    folder.enabled = not folder.enabled
    folder.save(update_fields=["enabled"])
    messages.success(request, f"{'Resumed' if folder.enabled else 'Paused'}: {folder.path}")
    return redirect("web:inbox")
