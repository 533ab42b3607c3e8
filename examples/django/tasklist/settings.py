"""Settings of the tasklist example: a Django site cached by a shoal cluster.

The cache is the only thing that changes between environments, from two
environment variables:

  DJANGO_CACHE_LOCATION  the memcache servers, comma separated (default: the
                         three nodes deploy/local-cluster.sh starts,
                         127.0.0.1:11211,127.0.0.1:11212,127.0.0.1:11213).
                         Any shoal node serves any key, so one node works too;
                         listing several lets the client spread connections.
  DJANGO_CACHE_BACKEND   which Django backend talks to it:
                           pymemcache      PyMemcacheCache (text protocol; default)
                           pylibmc         PyLibMCCache (text protocol)
                           pylibmc-binary  PyLibMCCache with OPTIONS binary
                           bmemcached      django-bmemcached (binary protocol)
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "tasklist-example-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "tasks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tasklist.urls"
WSGI_APPLICATION = "tasklist.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
            ],
        },
    },
]

# SQLite: nothing to set up. `manage.py test` uses an in-memory copy.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}

# -- the cache ---------------------------------------------------------------

CACHE_BACKENDS = {
    "pymemcache": ("django.core.cache.backends.memcached.PyMemcacheCache", {}),
    "pylibmc": ("django.core.cache.backends.memcached.PyLibMCCache", {}),
    "pylibmc-binary": ("django.core.cache.backends.memcached.PyLibMCCache", {"binary": True}),
    "bmemcached": ("django_bmemcached.memcached.BMemcached", {}),
}
DEFAULT_CACHE_LOCATION = "127.0.0.1:11211,127.0.0.1:11212,127.0.0.1:11213"

_backend_name = os.environ.get("DJANGO_CACHE_BACKEND", "pymemcache")
if _backend_name not in CACHE_BACKENDS:
    raise ImproperlyConfigured(
        f"DJANGO_CACHE_BACKEND={_backend_name!r}: pick one of {', '.join(CACHE_BACKENDS)}")
_backend, _options = CACHE_BACKENDS[_backend_name]
_location = [s.strip() for s in
             os.environ.get("DJANGO_CACHE_LOCATION", DEFAULT_CACHE_LOCATION).split(",")
             if s.strip()]
if not _location:
    raise ImproperlyConfigured("DJANGO_CACHE_LOCATION names no server")

CACHES = {
    "default": {
        "BACKEND": _backend,
        "LOCATION": _location if len(_location) > 1 else _location[0],
        "TIMEOUT": 300,
        "KEY_PREFIX": "tasklist",
        "OPTIONS": _options,
    }
}

# Sessions live in the cache only (no database table): any web worker, on any
# machine, finds a visitor's session through any shoal node.
SESSION_ENGINE = "django.contrib.sessions.backends.cache"
SESSION_CACHE_ALIAS = "default"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
