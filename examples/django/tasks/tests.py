"""The tasklist's caching, checked against a real memcache cluster.

These tests use the cache from settings (DJANGO_CACHE_LOCATION,
DJANGO_CACHE_BACKEND): they are meant to run against shoal, and each test
starts with cache.clear(), which empties the whole cluster. Whether a
response came from the cache is checked through the cache itself (the key is
there, the database was not asked: assertNumQueries(0)), never by timing.
"""

from django.conf import settings
from django.contrib.sessions.backends.cache import SessionStore
from django.core.cache import cache
from django.core.cache.utils import make_template_fragment_key
from django.test import Client, RequestFactory, TestCase
from django.utils.cache import get_cache_key

from .models import Task
from .views import SUMMARY_FRAGMENT, TASKS_KEY, invalidate

SUMMARY_KEY = make_template_fragment_key(SUMMARY_FRAGMENT)


class CacheTestCase(TestCase):
    def setUp(self):
        cache.clear()
        self.addCleanup(cache.close)


class LowLevelCacheTests(CacheTestCase):
    def test_second_request_is_served_from_the_cache(self):
        a = Task.objects.create(name="write docs")
        b = Task.objects.create(name="ship it")
        self.assertIsNone(cache.get(TASKS_KEY))

        self.assertContains(self.client.get("/"), "write docs")
        self.assertEqual(cache.get(TASKS_KEY), [{"id": a.id, "name": "write docs"},
                                                {"id": b.id, "name": "ship it"}])
        with self.assertNumQueries(0):
            again = self.client.get("/")
        self.assertContains(again, "write docs")
        self.assertContains(again, "ship it")

    def test_changes_behind_the_cache_show_once_invalidated(self):
        Task.objects.create(name="first")
        self.client.get("/")
        Task.objects.create(name="written behind the cache's back")
        self.assertNotContains(self.client.get("/"), "behind the cache")
        invalidate()
        self.assertIsNone(cache.get(TASKS_KEY))
        self.assertContains(self.client.get("/"), "behind the cache")

    def test_add_and_remove_drop_the_cached_list(self):
        self.client.get("/")
        self.assertEqual(cache.get(TASKS_KEY), [])
        # (not following the redirect: that GET would refill the cache)
        self.assertRedirects(self.client.post("/add/", {"name": "buy milk"}), "/",
                             fetch_redirect_response=False)
        self.assertIsNone(cache.get(TASKS_KEY))
        self.assertContains(self.client.get("/"), "<li>buy milk")
        task = Task.objects.get(name="buy milk")
        self.assertEqual(cache.get(TASKS_KEY), [{"id": task.id, "name": "buy milk"}])

        self.assertRedirects(self.client.post(f"/remove/{task.id}/"), "/",
                             fetch_redirect_response=False)
        self.assertIsNone(cache.get(TASKS_KEY))
        page = self.client.get("/")
        self.assertNotContains(page, "<li>buy milk")  # (the session still names it)
        self.assertContains(page, "Nothing to do.")

    def test_unicode_and_objects_round_trip(self):
        values = {"ключ": {"nested": [1, 2, 3]}, "日本語": ("tuple", 2.5), "emoji-🎉": "🎉"}
        self.assertEqual(cache.set_many(values), [])
        self.assertEqual(cache.get_many([*values, "missing"]), values)
        self.assertEqual(cache.get_or_set("computed", lambda: "once"), "once")
        self.assertEqual(cache.get_or_set("computed", lambda: "twice"), "once")
        self.assertTrue(cache.add("fresh", 1))
        self.assertFalse(cache.add("fresh", 2))
        self.assertEqual(cache.get("fresh"), 1)
        self.assertTrue(cache.delete("fresh"))
        self.assertIsNone(cache.get("fresh"))


class FragmentCacheTests(CacheTestCase):
    def test_summary_fragment_is_cached(self):
        Task.objects.create(name="one")
        Task.objects.create(name="two")
        self.assertIsNone(cache.get(SUMMARY_KEY))
        self.assertContains(self.client.get("/"), "2 tasks, newest: two")
        self.assertIn("2 tasks, newest: two", cache.get(SUMMARY_KEY))

        Task.objects.create(name="three")  # not through a view: nothing invalidated
        with self.assertNumQueries(0):  # list and fragment both from the cache
            page = self.client.get("/")
        self.assertContains(page, "2 tasks, newest: two")

        cache.delete(SUMMARY_KEY)
        self.assertContains(self.client.get("/"), "3 tasks, newest: three")

    def test_adding_a_task_refreshes_the_fragment(self):
        self.client.get("/")
        self.assertIn("0 tasks, newest: none", cache.get(SUMMARY_KEY))
        self.client.post("/add/", {"name": "water plants"})
        self.assertIsNone(cache.get(SUMMARY_KEY))
        self.assertContains(self.client.get("/"), "1 task, newest: water plants")


class PerViewCacheTests(CacheTestCase):
    def test_stats_page_is_cached_per_url(self):
        Task.objects.create(name="only")
        first = self.client.get("/stats/")
        self.assertContains(first, "1 task in the database")

        key = get_cache_key(RequestFactory().get("/stats/"))
        self.assertIsNotNone(key, "cache_page stored no headers for /stats/")
        cached = cache.get(key)
        self.assertIsNotNone(cached, "cache_page stored no response for /stats/")
        self.assertEqual(cached.content, first.content)

        Task.objects.create(name="another")
        with self.assertNumQueries(0):
            again = self.client.get("/stats/")
        self.assertContains(again, "1 task in the database")
        # another URL is another cache entry
        self.assertContains(self.client.get("/stats/?fresh=1"), "2 tasks in the database")

        cache.delete(key)
        self.assertContains(self.client.get("/stats/"), "2 tasks in the database")


class CachedSessionTests(CacheTestCase):
    def test_session_lives_in_the_cache_and_survives_requests(self):
        self.client.post("/add/", {"name": "a"})
        sid = self.client.cookies[settings.SESSION_COOKIE_NAME].value
        self.assertEqual(cache.get(SessionStore.cache_key_prefix + sid),
                         {"added": 1, "last_added": "a"})

        self.client.post("/add/", {"name": "b"})
        self.assertEqual(self.client.cookies[settings.SESSION_COOKIE_NAME].value, sid)
        self.assertContains(self.client.get("/"),
                            'You added 2 tasks this session; the last was "b".')
        self.assertEqual(SessionStore(session_key=sid).load(),
                         {"added": 2, "last_added": "b"})

    def test_session_follows_the_cookie_not_the_client(self):
        self.client.post("/add/", {"name": "mine"})
        sid = self.client.cookies[settings.SESSION_COOKIE_NAME].value

        same_visitor = Client()  # e.g. the next request, on another web worker
        same_visitor.cookies[settings.SESSION_COOKIE_NAME] = sid
        self.assertContains(same_visitor.get("/"), 'You added 1 task this session')

        stranger = Client()
        self.assertNotContains(stranger.get("/"), "You added")

    def test_deleted_session_is_gone_from_the_cache(self):
        self.client.post("/add/", {"name": "x"})
        sid = self.client.cookies[settings.SESSION_COOKIE_NAME].value
        self.assertTrue(SessionStore().exists(sid))
        SessionStore(session_key=sid).delete()
        self.assertIsNone(cache.get(SessionStore.cache_key_prefix + sid))
        self.assertNotContains(self.client.get("/"), "You added")
