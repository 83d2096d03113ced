from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from portal.web.views import browse, dashboard, images, inbox, review, training, upload

page_patterns = [
    path("", browse.home, name="home"),
    path("browse/", browse.browse, name="browse"),
    # Images and their permission-checked files
    path("images/<int:pk>/", images.image_detail, name="image_detail"),
    path("images/<int:pk>/label/", images.set_image_label, name="image_label"),
    path("labels/<int:label_id>/undo/", images.undo_relabel, name="relabel_undo"),
    path("images/<int:pk>/not-classifiable/", images.set_not_classifiable, name="image_not_classifiable"),
    path("images/<int:pk>/original/", images.image_original, name="image_original"),
    path("images/<int:pk>/thumbnail/", images.image_derived, {"kind": "thumbnail"}, name="image_thumbnail"),
    path("images/<int:pk>/derivative/", images.image_derived, {"kind": "derivative"}, name="image_derivative"),
    path("images/<int:pk>/full.png", images.image_rendition, {"kind": "full"}, name="image_full"),
    path("images/<int:pk>/preview.png", images.image_rendition, {"kind": "preview"}, name="image_preview"),
    # Upload
    path("upload/", upload.upload_page, name="upload"),
    path("upload/file/", upload.upload_file, name="upload_file"),
    path("upload/status/", upload.upload_status, name="upload_status"),
    # Review queue (curators)
    path("review/", review.review, name="review"),
    path("review/<int:pk>/label/", review.review_label, name="review_label"),
    path("review/<int:pk>/skip/", review.review_skip, name="review_skip"),
    path("review/unskip/", review.review_unskip, name="review_unskip"),
    path("review/undo/", review.review_undo, name="review_undo"),
    path("review/bulk-accept/", review.review_bulk_accept, name="review_bulk_accept"),
    # Watch folders (curators)
    path("inbox/", inbox.inbox, name="inbox"),
    path("inbox/<int:pk>/toggle/", inbox.inbox_toggle, name="inbox_toggle"),
    # Metrics
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("dashboard/v<int:version>/cell/", dashboard.confusion_cell, name="confusion_cell"),
    # Training and models (actions: admins)
    path("training/", training.training, name="training"),
    path("training/start/", training.training_start, name="training_start"),
    path("training/refit/", training.training_refit, name="training_refit"),
    path("training/runs/<int:pk>/", training.training_run, name="training_run"),
    path("training/runs/<int:pk>/progress/", training.training_progress, name="training_progress"),
    path("training/runs/<int:pk>/cancel/", training.training_cancel, name="training_cancel"),
    path("models/v<int:version>/promote/", training.model_promote, name="model_promote"),
    path("models/rollback/", training.model_rollback, name="model_rollback"),
]

urlpatterns = [
    # Browsers ask for /favicon.ico whatever the page's <link rel=icon> says.
    path("favicon.ico", RedirectView.as_view(url=static("img/favicon.svg"), permanent=True)),
    # Django's auth views, named as settings.LOGIN_URL expects ("login", outside the web namespace).
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include((page_patterns, "web"))),
]
