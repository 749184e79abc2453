from copilot.routers import OptionalSlashRouter
from patients.views import PatientViewSet

router = OptionalSlashRouter()
router.register("patients", PatientViewSet, basename="patient")

urlpatterns = router.urls
