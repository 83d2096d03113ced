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


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. invalid, not_found, duplicate.")
    message = serializers.CharField(help_text="Readable explanation.")
    fields = serializers.DictField(help_text="Per-field messages (400 only); empty otherwise.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class PortalAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, description in ERROR_STATUSES.items():
            if code not in responses and self._error_applies(code):
                response = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["description"] = description
                responses[code] = response
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
