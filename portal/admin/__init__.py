"""Django admin for every model, with the filters and searches a lab manager reaches for.

What a service owns is read-only here: an image's status, split, curated and predicted category,
label rows, a model version's status and a training run's status and lock. Admin actions call the
services instead (set a label, promote, roll back, cancel a run), so the rules hold (one current label
and its label.changed event, one production model and its re-classification, the training lock).
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import transaction
from django.utils.html import format_html

from portal.models import (
    ApiToken,
    Category,
    Label,
    Membership,
    ModelVersion,
    Prediction,
    Project,
    Sample,
    SEMImage,
    TrainingRun,
    WebhookDelivery,
    WebhookSubscription,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


class UserMembershipInline(admin.TabularInline):
    """The user's projects and roles, on the user's own page (the portal's access comes from these)."""

    model = Membership
    extra = 1
    autocomplete_fields = ["project"]
    verbose_name = "project role"
    verbose_name_plural = "Project roles (memberships)"


class PortalUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, UserMembershipInline]

    def get_fieldsets(self, request, obj=None):
        # Django's permissions and groups look like the place to give access; say where it really is.
        fieldsets = [(name, dict(options)) for name, options in super().get_fieldsets(request, obj)]
        for name, options in fieldsets:
            if name == "Permissions":
                options["description"] = (
                    "Portal access comes from the project roles below (member: upload, browse, metrics; curator: "
                    "also review labels) and from Staff status (an administrator). Groups and user permissions "
                    "only matter in this admin site."
                )
        return fieldsets


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, PortalUserAdmin)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name", "description"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__name"]


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ["lab_sample_id", "name", "project", "material", "owner", "lims_id", "created_at"]
    list_filter = ["project", "created_at"]
    search_fields = ["lab_sample_id", "name", "material", "lims_id", "description"]
    autocomplete_fields = ["owner"]


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "folder_name", "order", "active"]
    list_editable = ["order", "active"]
    search_fields = ["name", "folder_name"]
    prepopulated_fields = {"slug": ["name"]}


class LabelInline(admin.TabularInline):
    """The label history, read-only: labels change through the set-label action (portal.services.curation.labels)."""

    model = Label
    extra = 0
    fields = ["category", "source", "created_by", "created_at", "is_current", "note"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class PredictionInline(admin.TabularInline):
    model = Prediction
    extra = 0
    fields = ["model_version", "category", "confidence", "margin", "entropy", "created_at"]
    readonly_fields = fields
    can_delete = False


class SetLabelForm(ActionForm):
    category = forms.ModelChoiceField(
        queryset=Category.objects.filter(active=True),
        required=False,
        label="Category",
        help_text="for “Set the curated label”",
    )


@admin.register(SEMImage)
class SEMImageAdmin(admin.ModelAdmin):
    list_display = [
        "thumb",
        "original_filename",
        "sample",
        "status",
        "split",
        "curated_category",
        "predicted_category",
        "predicted_confidence",
        "vendor",
        "uploaded_at",
    ]
    list_filter = ["status", "split", "curated_category", "predicted_category", "vendor", "format", "uploaded_at"]
    search_fields = ["original_filename", "sha256", "sample__lab_sample_id", "sample__name", "instrument_model"]
    list_select_related = ["sample", "curated_category", "predicted_category"]
    # Status, split, labels and predictions belong to the services (ingestion, classification, labels).
    readonly_fields = [
        "sha256",
        "file_size",
        "width",
        "height",
        "bit_depth",
        "mode",
        "uploaded_at",
        "metadata",
        "split",
        "status",
        "status_changed_at",
        "claimed_at",
        "classify_attempts",
        "error",
        "curated_category",
        "predicted_category",
        "predicted_confidence",
        "predicted_margin",
        "predicted_by",
    ]
    raw_id_fields = ["sample"]
    inlines = [LabelInline, PredictionInline]
    date_hierarchy = "uploaded_at"
    action_form = SetLabelForm
    actions = ["set_curated_label"]

    @admin.display(description="")
    def thumb(self, obj):
        if not obj.thumbnail:
            return ""
        return format_html('<img src="/images/{}/thumbnail" style="height:48px" alt="">', obj.pk)

    @admin.action(description="Set the curated label (choose the category)", permissions=["change"])
    def set_curated_label(self, request, queryset):
        from portal.services.curation.labels import set_label

        try:
            category = SetLabelForm.base_fields["category"].clean(request.POST.get("category"))
        except forms.ValidationError:
            category = None
        if category is None:
            self.message_user(request, "Choose a category for the label.", messages.ERROR)
            return
        changed = 0
        with transaction.atomic():
            for image in queryset:
                changed += image.curated_category_id != category.pk
                set_label(image, category, source=Label.Source.IMAGE_PAGE, user=request.user, note="set in the admin")
        self.message_user(request, f"{category.name}: {changed} image(s) labelled, the others had it already.")


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    """View only: a label is set with the image's action (or the review queue, image page, API)."""

    list_display = ["image", "category", "source", "created_by", "created_at", "is_current"]
    list_filter = ["source", "is_current", "category", "created_at"]
    search_fields = ["image__original_filename", "image__sha256", "created_by__username"]
    raw_id_fields = ["image"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["image", "model_version", "category", "confidence", "margin", "created_at"]
    list_filter = ["model_version", "category"]
    search_fields = ["image__original_filename", "image__sha256"]
    raw_id_fields = ["image"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["version", "status", "arch", "accuracy", "macro_f1", "gate_passed", "created_at", "promoted_at"]
    list_filter = ["status", "arch", "gate_passed"]
    search_fields = ["version", "artifact_sha256", "gate_reason"]
    actions = ["promote_model", "roll_back"]

    def get_readonly_fields(self, request, obj=None):
        # Read-only, the status above all: it changes through promote / roll back (portal.services.learning.promotion).
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False  # model versions come from training runs

    def has_delete_permission(self, request, obj=None):
        return False  # artifacts, predictions and the gate's history point at them

    @admin.action(description="Promote the selected version to production", permissions=["change"])
    def promote_model(self, request, queryset):
        from portal.services.learning import promotion

        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model version to promote.", messages.ERROR)
            return
        try:
            promoted = promotion.promote(queryset.get(), request.user)
        except promotion.ModelActionError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            self.message_user(request, f"Model v{promoted.version} is now in production.")

    @admin.action(description="Roll back production to the previous version", permissions=["change"])
    def roll_back(self, request, queryset):
        from portal.services.learning import promotion

        try:
            restored = promotion.rollback(request.user)
        except promotion.ModelActionError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            self.message_user(request, f"Rolled back: v{restored.version} is in production again.")


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "pk",
        "status",
        "trigger",
        "requested_by",
        "progress_fraction",
        "device",
        "duration_s",
        "model_version",
        "created_at",
    ]
    list_filter = ["status", "trigger", "device"]
    search_fields = ["error", "log"]
    actions = ["cancel_runs"]

    def get_readonly_fields(self, request, obj=None):
        # Runs are started from the Training page, the API or train_now (the training lock), and their
        # status is the worker's: everything is read-only; a run is stopped with the cancel action.
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return bool(obj) and obj.active is None and request.user.is_superuser  # finished runs only

    @admin.action(description="Cancel the selected runs", permissions=["change"])
    def cancel_runs(self, request, queryset):
        from portal.services.learning.training import request_cancel

        cancelled = sum(request_cancel(run) for run in queryset)
        self.message_user(request, f"Cancel requested for {cancelled} run(s); the others are over.")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["prefix", "key_hash", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        # Adding: the owner, a name and an optional expiry; the secret is generated (portal.services.delivery.tokens).
        editable = ["user", "name", "expires_at"]
        return editable if obj is None else [*editable, *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        from portal.services.delivery.tokens import create_token

        created = create_token(obj.user, obj.name, expires_at=obj.expires_at)
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = (
            created.token.pk,
            created.token.prefix,
            created.token.key_hash,
            created.token.created_at,
        )
        self.message_user(
            request, f"Token created. Copy the secret now, it is not shown again: {created.secret}", messages.WARNING
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        from portal.services.delivery.tokens import revoke_token

        for token in queryset:
            revoke_token(token)


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    fields = ["event", "status", "attempts", "response_status", "error", "created_at", "delivered_at"]
    readonly_fields = fields
    can_delete = False


class WebhookSubscriptionForm(forms.ModelForm):
    class Meta:
        model = WebhookSubscription
        fields = "__all__"

    def clean_url(self):
        """The API's rules (portal.services.delivery.outbound): the normalised URL is stored, refused ones are not."""
        from portal.services.delivery.outbound import RefusedURL, parse_url
        from portal.services.delivery.webhooks import refused_destination

        try:
            url = parse_url(self.cleaned_data["url"]).url
        except RefusedURL as exc:
            raise forms.ValidationError(f"Not a usable webhook URL: {exc}.") from None
        refusal = refused_destination(url)
        if refusal:
            raise forms.ValidationError(f"Webhooks may not be sent there: {refusal}.")
        return url


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ["url", "owner", "project", "active", "created_at"]
    list_filter = ["active", "project"]
    search_fields = ["url", "owner__username"]
    inlines = [WebhookDeliveryInline]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["event", "subscription", "status", "attempts", "response_status", "created_at", "delivered_at"]
    list_filter = ["status", "event"]
    search_fields = ["subscription__url", "error"]
    readonly_fields = ["payload", "response_excerpt", "error"]
    actions = ["redeliver"]

    @admin.action(description="Deliver the selected again")
    def redeliver(self, request, queryset):
        # REST API issue: a fresh attempt budget; the delivery task claims only pending rows.
        from portal.services.delivery.webhooks import enqueue_deliveries

        ids = list(queryset.values_list("pk", flat=True))
        queryset.update(status=WebhookDelivery.Status.PENDING, attempts=0, error="")
        transaction.on_commit(lambda: enqueue_deliveries(ids))
        self.message_user(request, f"{len(ids)} deliveries queued again.")


import portal.admin.watch  # noqa: E402,F401  watch folders (issue 16)
