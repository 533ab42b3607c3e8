"""The tasklist's views, one per way Django caches:

- index:  the low-level API (cache.get / cache.set) keeps the task query's
          result, and a {% cache %} fragment keeps the rendered summary;
          the visitor's own counts come from the session (stored in the cache)
- stats:  a whole response cached per URL by @cache_page
- add, remove: change the database, then drop what the cache holds about it
"""

from django.core.cache import cache
from django.core.cache.utils import make_template_fragment_key
from django.shortcuts import redirect, render
from django.views.decorators.cache import cache_page
from django.views.decorators.http import require_POST

from .models import Task

TASKS_KEY = "tasks:all"
SUMMARY_FRAGMENT = "task_summary"  # the {% cache %} fragment's name in index.html


def cached_tasks():
    """The task list, from the cache when it is there, else from the database
    (and then cached for the next request, on whatever web worker)."""
    tasks = cache.get(TASKS_KEY)
    if tasks is None:
        tasks = list(Task.objects.values("id", "name"))
        cache.set(TASKS_KEY, tasks)
    return tasks


def invalidate():
    """Forget what the cache knows about the task list."""
    cache.delete_many([TASKS_KEY, make_template_fragment_key(SUMMARY_FRAGMENT)])


class Summary:
    """Figures for the summary fragment, queried only when the template asks
    for them, so not at all while the fragment comes from the cache."""

    @property
    def count(self):
        return Task.objects.count()

    @property
    def newest(self):
        return Task.objects.order_by("-id").values_list("name", flat=True).first() or "none"


def index(request):
    return render(request, "tasks/index.html", {
        "tasks": cached_tasks(),
        "summary": Summary(),
        "added": request.session.get("added", 0),
        "last_added": request.session.get("last_added"),
    })


@require_POST
def add(request):
    name = request.POST.get("name", "").strip()
    if name:
        Task.objects.create(name=name)
        invalidate()
        request.session["added"] = request.session.get("added", 0) + 1
        request.session["last_added"] = name
    return redirect("index")


@require_POST
def remove(request, pk):
    Task.objects.filter(pk=pk).delete()
    invalidate()
    return redirect("index")


@cache_page(60)
def stats(request):
    return render(request, "tasks/stats.html", {"count": Task.objects.count()})
