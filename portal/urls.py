from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("portal.api.urls")),
    path("account/tokens/", include("portal.api.token_views")),
    path("", include("portal.web.urls")),
]

# JSON error bodies under /api/, Django's pages elsewhere (portal/request_guard.py).
handler400 = "portal.request_guard.handler400"
handler403 = "portal.request_guard.handler403"
handler404 = "portal.request_guard.handler404"
handler500 = "portal.request_guard.handler500"
