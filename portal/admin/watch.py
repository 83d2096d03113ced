"""Admin of the watch folders (issue 16); imported at the end of portal.admin (portal/admin/__init__.py)."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from portal.models import WatchedFile, WatchFolder
from portal.services.ingestion.watch import folder_stats


@admin.register(WatchFolder)
class WatchFolderAdmin(admin.ModelAdmin):
    list_display = [
        "path",
        "project",
        "sample_rule",
        "enabled",
        "poll_interval_s",
        "settle_s",
        "move_to_processed",
        "last_scan_at",
        "last_scan_files",
        "counts",
    ]
    list_filter = ["enabled", "sample_rule", "project"]
    search_fields = ["path", "project__name"]
    autocomplete_fields = ["fixed_sample", "uploader"]
    readonly_fields = ["last_scan_at", "last_scan_seconds", "last_scan_files", "last_error", "counts"]
    fieldsets = [
        (None, {"fields": ["path", "project", "enabled"]}),
        ("Sample", {"fields": ["sample_rule", "create_missing_samples", "filename_pattern", "fixed_sample"]}),
        ("Scanning", {"fields": ["poll_interval_s", "settle_s", "move_to_processed", "uploader"]}),
        ("Last scan", {"fields": ["last_scan_at", "last_scan_seconds", "last_scan_files", "last_error", "counts"]}),
    ]

    @admin.display(description="stored / duplicates / refused / settling")
    def counts(self, folder):
        if not folder.pk:
            return "-"
        stats = folder_stats(folder)
        url = reverse("admin:portal_watchedfile_changelist") + f"?folder__id__exact={folder.pk}"
        return format_html(
            '<a href="{}">{} / {} / {} / {}</a>',
            url,
            stats["stored"],
            stats["duplicate"],
            stats["refused"],
            stats["seen"],
        )


@admin.register(WatchedFile)
class WatchedFileAdmin(admin.ModelAdmin):
    list_display = ["relpath", "folder", "status", "reason", "size", "image", "finished_at"]
    list_filter = ["status", "folder"]
    search_fields = ["relpath", "reason"]
    list_select_related = ["folder", "image"]
    readonly_fields = [f.name for f in WatchedFile._meta.fields]

    def has_add_permission(self, request):
        return False
