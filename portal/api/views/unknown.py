from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from portal.api.exceptions import error_body


@csrf_exempt  # it changes nothing: a POST to an unknown path is a 404, not a CSRF page
def unknown_endpoint(request, *args, **kwargs):
    return JsonResponse(error_body("not_found", "No such API endpoint; see /api/docs/."), status=404)
