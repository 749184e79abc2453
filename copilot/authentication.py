import hashlib
import json

from django.contrib.auth.models import Permission
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Aggregate, OuterRef, Q, Subquery, TextField, Value
from django.db.models.functions import Concat
from rest_framework import authentication, exceptions

from copilot.models import PermissionsVersion


class _JSONArray(Aggregate):
    """JSON array text of a column: json_group_array on SQLite, json_agg elsewhere.

    A codename may contain any character, so the labels are not joined with a
    separator that a codename could contain.
    """

    function = "JSON_GROUP_ARRAY"
    template = "%(function)s(%(expressions)s)"
    output_field = TextField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            function="JSON_AGG",
            template="CAST(%(function)s(%(expressions)s) AS text)",
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
        .annotate(labels=_JSONArray("label"))
        .values("labels")
    )
    return Subquery(labels, output_field=TextField())


def _permissions_version():
    """Subquery of the current value of PermissionsVersion (NULL without its row)."""
    rows = PermissionsVersion.objects.filter(pk=1).values("version")[:1]
    return Subquery(rows, output_field=TextField())


def _parse_labels(text):
    return frozenset(json.loads(text)) if text else frozenset()


class PermissionCache:
    """Each token's permission labels, kept in this process while they are current.

    An entry is (permissions version, user id, labels) under a digest of the
    token, so the memory of the process contains no usable token. The token query
    reads the version from the database, which triggers change with every change
    of permissions, group memberships or content types, however it is made, so a
    change applies to the next request in every process. At most `max_entries`
    tokens are kept, and past that the cache starts again empty.
    """

    def __init__(self, max_entries=10_000):
        self.max_entries = max_entries
        self._entries = {}

    @staticmethod
    def key(token_key):
        return hashlib.sha256(token_key.encode()).hexdigest()

    def get(self, token_key):
        return self._entries.get(self.key(token_key))

    def put(self, token_key, version, user_id, labels):
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[self.key(token_key)] = (version, user_id, labels)

    def discard(self, token_key):
        self._entries.pop(self.key(token_key), None)

    def clear(self):
        self._entries.clear()


permission_cache = PermissionCache()


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, loading the user's permissions in the same query.

    Every API request checks a model permission. Django's backend would load the
    permissions in further queries; here they fill its per-request cache. They
    come with the token in one query, or, while the permissions version that the
    query also reads is unchanged, from the process's PermissionCache. The cache
    spares PostgreSQL planning the permissions subquery, which took about 1 ms of
    each request.
    """

    def authenticate_credentials(self, key):
        model = self.get_model()
        cached = permission_cache.get(key)
        tokens = model.objects.select_related("user").annotate(
            permissions_version=_permissions_version()
        )
        if cached is None:
            tokens = tokens.annotate(permission_labels=_permission_labels("user_id"))
        try:
            token = tokens.get(key=key)
        except model.DoesNotExist:
            permission_cache.discard(key)
            raise exceptions.AuthenticationFailed("Invalid token.") from None

        user = token.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        version = token.permissions_version
        if cached is not None and cached[:2] == (version, user.pk) and version:
            labels = cached[2]
        else:
            if cached is None:
                text = token.permission_labels
            else:
                # The permissions changed since they were cached: read them again,
                # with the version they belong to. They are read for the user the
                # token query returned, because the token may have moved to another
                # user or been deleted since then.
                try:
                    text, version = (
                        type(user)
                        ._default_manager.filter(pk=user.pk)
                        .values_list(_permission_labels("pk"), _permissions_version())
                        .get()
                    )
                except ObjectDoesNotExist:
                    raise exceptions.AuthenticationFailed(
                        "User inactive or deleted."
                    ) from None
            labels = _parse_labels(text)
            if version:
                permission_cache.put(key, version, user.pk, labels)
            else:
                permission_cache.discard(key)
        if not user.is_superuser:
            user._perm_cache = set(labels)
        return user, token
