from django.urls import re_path
from rest_framework.parsers import MultiPartParser

from copilot.routers import OptionalSlashRouter
from scans.views import ScanViewSet

router = OptionalSlashRouter()
router.register("scans", ScanViewSet, basename="scan")

urlpatterns = [
    # Uploads take multipart only. The parsers are set on the route because DRF
    # chooses them before it sets the viewset action.
    re_path(
        r"^patients/(?P<patient_id>[0-9]+)/upload/scan/?$",
        ScanViewSet.as_view({"post": "create"}, parser_classes=[MultiPartParser]),
        name="scan-upload",
    ),
    *router.urls,
]
