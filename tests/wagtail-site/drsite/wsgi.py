"""The WSGI application, behind HTTP basic auth as DR sites are (DRSITE_BASIC_AUTH=user:pw),
the way nginx or an ingress would put it in front of gunicorn."""

import base64
import hmac
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "drsite.settings")
django_app = get_wsgi_application()
CREDENTIALS = os.environ.get("DRSITE_BASIC_AUTH", "")


def application(environ, start_response):
    if CREDENTIALS:
        given = environ.get("HTTP_AUTHORIZATION", "")
        want = "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()
        if not hmac.compare_digest(given.encode(), want.encode()):
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="dr"'), ("Content-Type", "text/plain")],
            )
            return [b"authentication required\n"]
    return django_app(environ, start_response)
