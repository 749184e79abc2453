from django.urls import re_path
from rest_framework.parsers import MultiPartParser

from copilot.routers import OptionalSlashRouter
from documents.views import DocumentViewSet

router = OptionalSlashRouter()
router.register("documents", DocumentViewSet, basename="document")

urlpatterns = [
    # Uploads take multipart only. The parsers are set on the route because DRF
    # chooses them before it sets the viewset action.
    re_path(
        r"^patients/(?P<patient_id>[0-9]+)/upload/document/?$",
        DocumentViewSet.as_view({"post": "create"}, parser_classes=[MultiPartParser]),
        name="document-upload",
    ),
    *router.urls,
]
