from django.contrib.auth.models import Permission
from django.db.models import Aggregate, OuterRef, Q, Subquery, TextField, Value
from django.db.models.functions import Concat
from rest_framework import authentication, exceptions


class _JoinedText(Aggregate):
    """Comma-joined text of a column: GROUP_CONCAT on SQLite, STRING_AGG elsewhere."""

    function = "GROUP_CONCAT"
    template = "%(function)s(%(expressions)s)"
    output_field = TextField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            function="STRING_AGG",
            template="%(function)s(%(expressions)s, ',')",
            **extra_context,
        )


def _permission_labels(user_field):
    """Subquery of the "app_label.codename" labels of a user's and its groups'."""
    labels = (
        Permission.objects.filter(
            Q(user=OuterRef(user_field)) | Q(group__user=OuterRef(user_field))
        )
        .annotate(label=Concat("content_type__app_label", Value("."), "codename"))
        .order_by()
        .annotate(one_row=Value(1))
        .values("one_row")
        .annotate(labels=_JoinedText("label"))
        .values("labels")
    )
    return Subquery(labels, output_field=TextField())


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, loading the user's permissions in the same query.

    Every API request checks a model permission. Django's backend would load the
    permissions in further queries; here they fill its per-request cache.
    """

    def authenticate_credentials(self, key):
        model = self.get_model()
        try:
            token = (
                model.objects.select_related("user")
                .annotate(permission_labels=_permission_labels("user_id"))
                .get(key=key)
            )
        except model.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid token.") from None

        user = token.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if not user.is_superuser:
            labels = token.permission_labels or ""
            user._perm_cache = {label for label in labels.split(",") if label}
        return user, token
