"""Cursor pagination: stable pages while the LIMS polls and new images keep arriving."""

from rest_framework.pagination import CursorPagination


class StableCursorPagination(CursorPagination):
    # The primary key is unique and increases with time, so cursors never skip or repeat a row.
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
