from django.urls import re_path

from copilot.routers import OptionalSlashRouter
from documents.views import DocumentViewSet

router = OptionalSlashRouter()
router.register("documents", DocumentViewSet, basename="document")

urlpatterns = [
    re_path(
        r"^patients/(?P<patient_id>[0-9]+)/upload/document/?$",
        DocumentViewSet.as_view({"post": "create"}),
        name="document-upload",
    ),
    *router.urls,
]
