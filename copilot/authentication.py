import hashlib
import uuid

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.db import transaction
from django.db.models import Aggregate, OuterRef, Q, Subquery, TextField, Value
from django.db.models.functions import Concat
from django.db.models.signals import m2m_changed, post_delete, post_save
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


# Each token's permission labels are kept in the cache for PERMISSIONS_TIMEOUT
# seconds, tagged with a version that any change of users' or groups' permissions
# replaces, so a change applies to the next request. The timeout bounds how long a
# change that sends no signal can go unseen. Such changes are SQL, QuerySet.update()
# and bulk_create(), and saves or deletes of the many-to-many tables' own rows, for
# which Django sends no signal. With a cache in each process, so is any change
# made in another process.
PERMISSIONS_TIMEOUT = 60
VERSION_KEY = "copilot:permissions:version"


def permissions_cache_key(token_key):
    # A digest, so the cache contains no usable token.
    return "copilot:permissions:" + hashlib.sha256(token_key.encode()).hexdigest()


def _parse_labels(text):
    return frozenset(label for label in (text or "").split(",") if label)


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, loading the user's permissions in the same query.

    Every API request checks a model permission. Django's backend would load the
    permissions in further queries; here they come with the token, or from the
    cache while no permission has changed, and fill the backend's per-request
    cache. The cache spares PostgreSQL planning the permissions subquery, which
    took about 1 ms of each request.
    """

    def authenticate_credentials(self, key):
        model = self.get_model()
        labels_key = permissions_cache_key(key)
        cached = cache.get_many([VERSION_KEY, labels_key])
        version = cached.get(VERSION_KEY)
        hit = cached.get(labels_key)
        # Anything but a (version, user id, labels) of this version is reloaded.
        if version is None or not (
            isinstance(hit, tuple) and len(hit) == 3 and hit[0] == version
        ):
            hit = None

        tokens = model.objects.select_related("user")
        if hit is None:
            tokens = tokens.annotate(permission_labels=_permission_labels("user_id"))
        try:
            token = tokens.get(key=key)
        except model.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid token.") from None

        user = token.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if hit is not None and hit[1] == user.pk:
            labels = hit[2]
        else:
            labels = _parse_labels(getattr(token, "permission_labels", None))
            if hit is not None:
                labels = _parse_labels(
                    model.objects.filter(pk=token.pk)
                    .values_list(_permission_labels("user_id"), flat=True)
                    .get()
                )
            if version is None:
                version = uuid.uuid4().hex
                cache.add(VERSION_KEY, version, timeout=None)
            cache.set(labels_key, (version, user.pk, labels), PERMISSIONS_TIMEOUT)
        if not user.is_superuser:
            user._perm_cache = set(labels)
        return user, token


def forget_permissions(**kwargs):
    """Make every cached set of permission labels stale, now and after commit.

    The first change of version lets the change apply at once inside its own
    transaction. A request served before the commit can still cache the old
    labels, so the version changes again after the commit.
    """

    def bump():
        cache.set(VERSION_KEY, uuid.uuid4().hex, timeout=None)

    bump()
    transaction.on_commit(bump)


def connect_signals():
    User = get_user_model()
    for sender in (
        User.user_permissions.through,
        User.groups.through,
        Group.permissions.through,
    ):
        m2m_changed.connect(
            forget_permissions, sender=sender, dispatch_uid=f"forget_{sender}"
        )
    for sender in (Group, Permission):
        for signal in (post_save, post_delete):
            signal.connect(
                forget_permissions, sender=sender, dispatch_uid=f"forget_{sender}"
            )
