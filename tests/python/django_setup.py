"""Configure Django once for the whole run (no project, no database).

Each test then points CACHES at a server with `override_settings`, which
resets Django's cache handler, so the backends are built the way a Django
site builds them: from settings.CACHES through `django.core.cache.caches`.
"""

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="shoal-client-suite",
        USE_TZ=True,
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
        ],
        DATABASES={},
        CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}},
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        TEMPLATES=[{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [],
            "APP_DIRS": False,
            "OPTIONS": {},
        }],
    )
    django.setup()
