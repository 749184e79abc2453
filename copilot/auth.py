from axes.backends import AxesStandaloneBackend
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.db.models import Q
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.response import Response

from copilot import audit
from copilot.models import AuditEntry
from copilot.responses import ErrorSerializer
from copilot.throttling import LoginRateThrottle
from copilot.viewsets import INVALID_FIELDS, UNSUPPORTED_MEDIA_TYPE


class SingleQueryModelBackend(ModelBackend):
    """Django's ModelBackend, loading user and group permissions in one query.

    The stock backend runs one query for the user's permissions and one for its
    groups' on every request; API reads check a permission each time.
    """

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            permissions = Permission.objects.all()
            if not user_obj.is_superuser:
                permissions = permissions.filter(
                    Q(user=user_obj) | Q(group__user=user_obj)
                )
            rows = permissions.values_list("content_type__app_label", "codename")
            user_obj._perm_cache = {f"{app}.{codename}" for app, codename in rows}
        return user_obj._perm_cache


class LoginLockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check, for logins that come with an HTTP request.

    Logins without a request (the shell, the test client's login) cannot be
    attacked from the network, and axes would refuse them outright.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


Action = AuditEntry.Action
Outcome = AuditEntry.Outcome


class LockedOut(exceptions.Throttled):
    default_detail = "Too many failed logins. Try again later."


@extend_schema(
    request=AuthTokenSerializer,
    responses={
        200: inline_serializer("Token", {"token": serializers.CharField()}),
        400: INVALID_FIELDS,
        415: UNSUPPORTED_MEDIA_TYPE,
        429: ErrorSerializer,
    },
)
class ObtainTokenView(ObtainAuthToken):
    """POST username and password, get the user's API token.

    Throttled per client address, and locked for a while after repeated failed
    logins of one username from one address (django-axes).
    """

    throttle_classes = [LoginRateThrottle]

    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            if getattr(request, "axes_locked_out", False):
                raise LockedOut()
            raise exceptions.ValidationError(serializer.errors)

        user = serializer.validated_data["user"]
        token, _ = Token.objects.get_or_create(user=user)
        login = audit.entry(request._request, Action.LOGIN, Outcome.SUCCESS)
        login.user_id, login.username = user.pk, user.get_username()
        login.save()
        return Response({"token": token.key})
