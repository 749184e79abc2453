from rest_framework import permissions


class ModelPermissions(permissions.DjangoModelPermissions):
    """Django model permissions, with the view permission required for reads.

    DRF's DjangoModelPermissions lets any authenticated user read. Here a GET
    needs the model's `view` permission, so the API grants what the user's admin
    groups grant and nothing more.
    """

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }

    def _queryset(self, view):
        # Only the model matters here. DRF would call get_queryset(), which builds
        # the list's count annotations a second time on each request.
        queryset = getattr(view, "queryset", None)
        if queryset is not None:
            return queryset
        return super()._queryset(view)
