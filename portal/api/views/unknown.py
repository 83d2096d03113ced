from django.http import JsonResponse

from portal.api.exceptions import error_body


def unknown_endpoint(request, *args, **kwargs):
    return JsonResponse(error_body("not_found", "No such API endpoint; see /api/docs/."), status=404)
