"""OpenAPI generation: every operation documents the common error body next to its own responses."""

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

ERROR_STATUSES = {
    "400": "Invalid input: `fields` names each wrong value.",
    "401": "No token, or an invalid or revoked one.",
    "403": "Authenticated, but the role does not allow this (member, curator, admin).",
    "404": "Not found, or not in one of your projects.",
    "429": "Too many requests for this token; retry after the `Retry-After` seconds.",
}
# Requests with a body can also meet these.
WRITE_ERROR_STATUSES = {
    "409": "Conflicts with the current state: a unique value that is taken (`duplicate`), an object still in use.",
    "413": "The body is larger than this endpoint accepts (`too_large`); nothing was read.",
}

# Answered by the web server (gunicorn's request-line limit) before the portal sees the request.
URI_TOO_LONG = "The URL with its query is longer than the web server accepts (4094 bytes); sent by the web server."


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. invalid, not_found, duplicate.")
    message = serializers.CharField(help_text="Readable explanation.")
    fields = serializers.DictField(help_text="Per-field messages (400 only); empty otherwise.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class PortalAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        statuses = dict(ERROR_STATUSES)
        if self.method.upper() in ("POST", "PUT", "PATCH"):
            statuses.update(WRITE_ERROR_STATUSES)
        for code, description in statuses.items():
            if code not in responses and self._error_applies(code):
                response = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["description"] = description
                responses[code] = response
        responses.setdefault("414", {"description": URI_TOO_LONG})  # no body schema: the web server's own page
        return responses

    def _error_applies(self, code: str) -> bool:
        if code == "401":
            return bool(self.view.get_authenticators()) and not self._is_public()
        if code == "403":
            return not self._is_public()
        return True

    def _is_public(self) -> bool:
        from rest_framework.permissions import AllowAny

        return any(isinstance(permission, AllowAny) for permission in self.view.get_permissions())


# --- Post-processing: what the views refuse, the schema says -------------------------------------------

NO_NUL = "^[^\x00]*$"


def strict_schema(result, generator, request, public):
    """drf-spectacular post-processing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]).

    - Text parameters and request-body strings cannot hold a NUL character (PostgreSQL cannot store or
      compare it, and the API refuses it with 400 before any look-up): the schema says so with a pattern.
    - An upload names its sample by `sample` or by `lab_sample_id`: at least one of them (anyOf).
    """
    for path in result.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                _no_nul(parameter.get("schema"))
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request"):
            for prop in (component.get("properties") or {}).values():
                _no_nul(prop)
                if prop.get("type") == "array":
                    _no_nul(prop.get("items"))
    upload = result.get("components", {}).get("schemas", {}).get("ImageUploadRequest")
    if upload is not None:
        upload["anyOf"] = [{"required": ["sample"]}, {"required": ["lab_sample_id"]}]
    return result


def _no_nul(schema) -> None:
    if not isinstance(schema, dict) or schema.get("type") != "string":
        return
    if (
        "pattern" in schema
        or "enum" in schema
        or schema.get("format") in ("binary", "date-time", "date", "uri", "uuid", "email", "byte")
    ):
        return
    schema["pattern"] = NO_NUL
