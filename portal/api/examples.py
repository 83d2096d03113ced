"""OpenAPI examples shared by the endpoint documentation (drf-spectacular OpenApiExample)."""

from drf_spectacular.utils import OpenApiExample

from classifier.config import TrainConfig

SAMPLE = {
    "id": 12,
    "project": 1,
    "lab_sample_id": "S-2024-0042",
    "name": "ZnO nanowires on Si",
    "material": "ZnO",
    "description": "Hydrothermal growth, 4 h",
    "preparation": "Au sputter 5 nm",
    "owner": "alice",
    "lims_id": "LIMS-77812",
    "image_count": 3,
    "created_at": "2025-03-04T10:15:00Z",
    "updated_at": "2025-03-04T10:15:00Z",
}
SAMPLE_CREATE = {
    "project": 1,
    "lab_sample_id": "S-2024-0042",
    "name": "ZnO nanowires on Si",
    "material": "ZnO",
    "lims_id": "LIMS-77812",
}

IMAGE = {
    "id": 501,
    "sample": 12,
    "lab_sample_id": "S-2024-0042",
    "lims_id": "LIMS-7731",
    "project": 1,
    "original_filename": "wire_0001.tif",
    "sha256": "9f2c" + "0" * 60,
    "format": "TIFF",
    "file_size": 1573126,
    "width": 1024,
    "height": 768,
    "bit_depth": 16,
    "mode": "I;16",
    "page_count": 1,
    "uploaded_by": "alice",
    "uploaded_at": "2025-03-04T10:16:02Z",
    "vendor": "FEI",
    "instrument_model": "Quanta 250",
    "accelerating_voltage_kv": 10.0,
    "working_distance_mm": 9.8,
    "magnification": 25000.0,
    "pixel_size_nm": 4.96,
    "detector": "ETD",
    "acquired_at": "2025-03-03T16:40:11Z",
    "databar_rows": 64,
    "split": "train",
    "status": "classified",
    "error": "",
    "curated_category": None,
    "predicted_category": "nanowires",
    "predicted_confidence": 0.93,
    "predicted_margin": 0.88,
    "predicted_model_version": 4,
    "predicted_set": ["nanowires"],
    "predicted_set_label": "Nanowires",
    "out_of_scope": False,
    "not_classifiable": False,
    "links": {
        "self": "/api/images/501/",
        "original": "/api/images/501/original/",
        "thumbnail": "/api/images/501/thumbnail/",
        "predictions": "/api/images/501/predictions/",
        "labels": "/api/images/501/labels/",
    },
}

PREDICTION = {
    "id": 9001,
    "image": 501,
    "model_version": 4,
    "category": "nanowires",
    "confidence": 0.93,
    "margin": 0.88,
    "entropy": 0.31,
    "probabilities": {"Nanowires": 0.93, "Fibres": 0.05, "Particles": 0.02},
    "prediction_set": ["nanowires"],
    "set_coverage": 0.9,
    "ood_score": 0.41,
    "out_of_scope": False,
    "created_at": "2025-03-04T10:16:09Z",
}

SIMILAR_IMAGE = {
    "id": 4711,
    "label": "fibres",
    "similarity": 0.8123,
    "thumbnail_url": "/api/images/4711/thumbnail/",
}

HEATMAP = {
    "status": "ready",
    "model_version": 3,
    "target_class": "Particles",
    "target_layer": "features.body.blocks.3",
    "views": 8,
    "seconds": 1.9,
    "error": "",
    "requested_at": "2025-03-05T08:00:00Z",
    "finished_at": "2025-03-05T08:00:03Z",
    "url": "/api/images/4711/heatmap/?version=3",
}

LABEL = {
    "id": 77,
    "image": 501,
    "category": "fibres",
    "source": "api",
    "created_by": "bob",
    "created_at": "2025-03-05T08:00:00Z",
    "is_current": True,
    "note": "Checked at higher magnification",
}
CATEGORY = {
    "id": 5,
    "name": "Nanowires",
    "slug": "nanowires",
    "folder_name": "Nanowires",
    "description": "",
    "order": 5,
    "active": True,
}
MODEL = {
    "version": 4,
    "status": "production",
    "arch": TrainConfig.arch,
    "classes": ["Biological", "Fibres", "Films_Coated_Surface"],
    "accuracy": 0.91,
    "macro_f1": 0.89,
    "gate_passed": True,
    "gate_reason": "macro F1 0.89 >= 0.87",
    "train_image_count": 18000,
    "test_image_count": 3100,
    "data_fingerprint": "3b1e" + "0" * 60,
    "artifact_sha256": "a0c9" + "0" * 60,
    "created_at": "2025-03-01T02:40:00Z",
    "promoted_at": "2025-03-01T03:10:00Z",
    "promoted_by": "admin",
    "training_run": 17,
}
MODEL_DETAIL = MODEL | {
    "evaluation": {"accuracy": 0.91, "macro_avg": {"f1": 0.89}},
    "metadata": {"config": {"sizes": list(TrainConfig.sizes)}},
}
METRICS = {
    "version": 4,
    "accuracy": 0.91,
    "top2_accuracy": 0.97,
    "ece": 0.03,
    "macro_avg": {"precision": 0.9, "recall": 0.89, "f1": 0.89, "support": 3100},
    "weighted_avg": {"precision": 0.91, "recall": 0.91, "f1": 0.91, "support": 3100},
    "per_class": [
        {"name": "Biological", "precision": 0.95, "recall": 0.9, "f1": 0.92, "support": 140},
        {"name": "Fibres", "precision": 0.88, "recall": 0.86, "f1": 0.87, "support": 210},
    ],
    "confusion_matrix": {
        "labels": ["Biological", "Fibres"],
        "counts": [[126, 14], [29, 181]],
        "row_percent": [[90.0, 10.0], [13.81, 86.19]],
    },
}
TRAINING_RUN = {
    "id": 18,
    "status": "running",
    "kind": "full",
    "trigger": "api",
    "requested_by": "admin",
    "forced": False,
    "progress_fraction": 0.42,
    "progress": {"stage": 2, "size": 128, "epoch": 1, "epochs": 3, "train_loss": 0.61},
    "device": "cuda:0",
    "train_image_count": 18200,
    "test_image_count": 3100,
    "error": "",
    "cancel_requested": False,
    "created_at": "2025-03-08T02:00:00Z",
    "started_at": "2025-03-08T02:00:03Z",
    "heartbeat_at": "2025-03-08T02:21:40Z",
    "finished_at": None,
    "duration_s": None,
    "model_version": None,
}
WEBHOOK = {
    "id": 3,
    "url": "https://lims.example.org/hooks/sem",
    "events": ["image.classified", "label.changed"],
    "project": 1,
    "active": True,
    "created_at": "2025-03-02T09:00:00Z",
}
WEBHOOK_CREATED = WEBHOOK | {"secret": "whsec_4bq0fW1o6f5n2Lr9yW0xj1wqz7tX3b7u9m8cK2pQ1sE"}
WEBHOOK_CREATE = {
    "url": "https://lims.example.org/hooks/sem",
    "events": ["image.classified", "label.changed"],
    "project": 1,
}
DELIVERY = {
    "id": 991,
    "event": "image.classified",
    "status": "delivered",
    "attempts": 2,
    "response_status": 200,
    "response_excerpt": "ok",
    "error": "",
    "payload": {"event": "image.classified", "data": {"image": {"id": 501}}},
    "created_at": "2025-03-04T10:16:10Z",
    "delivered_at": "2025-03-04T10:16:41Z",
}


def page(item: dict) -> dict:
    return {"next": "http://lab.example.org/api/images/?cursor=cD0yMDI1", "previous": None, "results": [item]}


def example(name: str, value, *, request: bool = False, response: bool = True, status: str | None = None):
    return OpenApiExample(
        name,
        value=value,
        request_only=request,
        response_only=response and not request,
        status_codes=[status] if status else None,
    )


def error_example(name: str, code: str, message: str, status: str, fields: dict | None = None):
    return OpenApiExample(
        name,
        value={"error": {"code": code, "message": message, "fields": fields or {}}},
        response_only=True,
        status_codes=[status],
    )


NOT_FOUND = error_example("Not found", "not_found", "Not found.", "404")
FORBIDDEN = error_example("Forbidden", "permission_denied", "Only portal administrators may do this.", "403")
