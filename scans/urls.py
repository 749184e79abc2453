from django.urls import re_path

from copilot.routers import OptionalSlashRouter
from scans.views import ScanViewSet

router = OptionalSlashRouter()
router.register("scans", ScanViewSet, basename="scan")

urlpatterns = [
    re_path(
        r"^patients/(?P<patient_id>[0-9]+)/upload/scan/?$",
        ScanViewSet.as_view({"post": "create"}),
        name="scan-upload",
    ),
    *router.urls,
]
