from django.urls import path

from tasks import views

urlpatterns = [
    path("", views.index, name="index"),
    path("add/", views.add, name="add"),
    path("remove/<int:pk>/", views.remove, name="remove"),
    path("stats/", views.stats, name="stats"),
]
