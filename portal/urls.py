from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("portal.api.urls")),
    path("account/tokens/", include("portal.api.token_views")),
    path("", include("portal.web.urls")),
]
