import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()

# Bodies longer than the largest upload (and chunked bodies) are refused before Django reads them
# (portal/request_limits.py).
from portal.request_limits import limit_wsgi_body  # noqa: E402  (needs the settings configured above)

application = limit_wsgi_body(application)
