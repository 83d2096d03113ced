"""One image representation: the REST API (`/api/images/`), the webhook payloads (`image.classified`,
`label.changed`) and the upload page's status describe an image with the same field names and values:
ImageSummarySerializer. Each adds its own extras on top (the API its details, the upload page its page
links and display names); none renames a shared field.
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portal.models import SEMImage

IMAGE_LINKS = {
    "self": "detail",
    "original": "original",
    "thumbnail": "thumbnail",
    "predictions": "predictions",
    "labels": "labels",
}

SUMMARY_FIELDS = [
    "id",
    "sample",
    "lab_sample_id",
    "lims_id",
    "project",
    "original_filename",
    "sha256",
    "status",
    "curated_category",
    "predicted_category",
    "predicted_confidence",
    "predicted_margin",
    "predicted_model_version",
    "predicted_set",
    "predicted_set_label",
    "out_of_scope",
    "not_classifiable",
    "links",
]

# The related rows a summary reads: select them with the images.
SUMMARY_RELATED = ("sample", "curated_category", "predicted_category", "predicted_by")


class ImageSummarySerializer(serializers.ModelSerializer):
    """id, sample (id), lab_sample_id and lims_id (the sample's), project (id), original_filename, sha256,
    status, curated_category and predicted_category (category slugs, null until labelled / classified),
    predicted_confidence, predicted_margin (top-1 minus top-2 probability), predicted_model_version (the
    model version number that classified it), predicted_set (the conformal prediction set at the lab's
    coverage: category slugs, most probable first; empty when the model has none) and predicted_set_label
    ("Particles or Powder"), out_of_scope (status "out_of_scope": unlike anything the model learnt from,
    blank, or a colour image; the prediction is not to be relied on), not_classifiable (a curator marked it "not SEM / not
    classifiable"), links (API paths of the image and its files)."""

    lab_sample_id = serializers.CharField(source="sample.lab_sample_id", read_only=True)
    lims_id = serializers.CharField(source="sample.lims_id", read_only=True, allow_null=True)
    project = serializers.IntegerField(source="sample.project_id", read_only=True)
    # Null until a curator labels the image / until a model classifies it (schema: nullable).
    curated_category = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    predicted_category = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    predicted_model_version = serializers.SerializerMethodField()
    predicted_set = serializers.ListField(child=serializers.CharField(), read_only=True)
    out_of_scope = serializers.BooleanField(read_only=True)
    links = serializers.SerializerMethodField()

    class Meta:
        model = SEMImage
        fields = SUMMARY_FIELDS
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_predicted_model_version(self, image) -> int | None:
        return image.predicted_by.version if image.predicted_by_id and image.predicted_by else None

    @extend_schema_field({"type": "object", "properties": {name: {"type": "string"} for name in IMAGE_LINKS}})
    def get_links(self, image) -> dict:
        return {name: reverse(f"api:image-{route}", args=[image.pk]) for name, route in IMAGE_LINKS.items()}


def image_summary(image: SEMImage) -> dict:
    """The shared representation as a plain dict (webhook payloads, the upload page)."""
    return dict(ImageSummarySerializer(image).data)
