from django.contrib import admin
from django.urls import include, path, re_path

from copilot import views
from copilot.auth import ObtainTokenView

handler400 = "copilot.views.bad_request"
handler403 = "copilot.views.permission_denied"
handler404 = "copilot.views.not_found"
handler500 = "copilot.views.server_error"

urlpatterns = [
    re_path(r"^$", views.api_root, name="api-root"),
    re_path(r"^health/?$", views.health, name="health"),
    re_path(r"^auth/token/?$", ObtainTokenView.as_view(), name="auth-token"),
    path("", include("patients.urls")),
    path("", include("scans.urls")),
    path("", include("documents.urls")),
    path("schema/", views.SchemaView.as_view(), name="schema"),
    path("docs/", views.DocsView.as_view(url_name="schema"), name="swagger-ui"),
    path("admin/", admin.site.urls),
    # Files of the local storage, for authenticated users only. Cloudinary files
    # are delivered by Cloudinary.
    re_path(
        r"^media/xrays/(?P<path>.+)$",
        views.serve_stored_file,
        {"alias": "scans", "folder": "xrays", "permission": "scans.view_scan"},
        name="scan-file",
    ),
    re_path(
        r"^media/reports/(?P<path>.+)$",
        views.serve_stored_file,
        {
            "alias": "documents",
            "folder": "reports",
            "permission": "documents.view_patientdocument",
        },
        name="document-file",
    ),
]
