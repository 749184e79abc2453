"""The audit trail: who read or changed which patient's records, from where.

Changes (create, update, delete) are recorded by model signals, so the API, the
admin, bulk and cascade deletes and management commands are all covered, inside
the transaction that made them. Reads are recorded by AuditMiddleware after the
response: the object of a detail route, the rows a list page showed (reported by
the API paginator or read from the admin's change list), the row behind a stored
file. A write that changed nothing is recorded as an attempt with its outcome.

The AUDIT_MODELS setting names the audited models and the attribute that contains
each one's patient id, so this module imports no app's code.
"""

import contextvars
import ipaddress
import logging
from dataclasses import dataclass, field

from django.apps import apps
from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db import connections, router
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from copilot.models import AuditEntry
from copilot.requestid import current_request_id
from copilot.viewsets import MAX_ID

logger = logging.getLogger(__name__)

Action = AuditEntry.Action
Outcome = AuditEntry.Outcome

VIEWSET_ACTIONS = {
    "list": Action.LIST,
    "retrieve": Action.READ,
    "create": Action.CREATE,
    "update": Action.UPDATE,
    "partial_update": Action.UPDATE,
    "destroy": Action.DELETE,
}
ADMIN_VIEWS = {
    "changelist": Action.LIST,
    "change": Action.READ,
    "history": Action.READ,
    "delete": Action.READ,
    "add": Action.CREATE,
}
READ_ACTIONS = {Action.LIST, Action.READ}
OUTCOMES = {
    400: Outcome.INVALID,
    401: Outcome.UNAUTHENTICATED,
    403: Outcome.DENIED,
    404: Outcome.NOT_FOUND,
    409: Outcome.CONFLICT,
    413: Outcome.INVALID,
    429: Outcome.THROTTLED,
}

_current = contextvars.ContextVar("audit_request", default=None)


@dataclass
class Target:
    """The action, model and ids that a request targets, taken from its route."""

    action: str
    model: type
    object_id: str = ""
    patient_id: int | None = None


@dataclass
class RequestAudit:
    request: object
    target: Target | None = None
    reads: list = field(default_factory=list)
    changed: bool = False


def audited_models():
    """Return {model label in lower case: attribute holding the patient id}."""
    return {label.lower(): attr for label, attr in settings.AUDIT_MODELS.items()}


def patient_attribute(model):
    return audited_models().get(model._meta.label_lower)


def patient_id_of(instance):
    attribute = patient_attribute(type(instance))
    return getattr(instance, attribute, None) if attribute else None


def outcome_for_status(status_code):
    if status_code < 400:
        return Outcome.SUCCESS
    if status_code >= 500:
        return Outcome.ERROR
    return OUTCOMES.get(status_code, Outcome.INVALID)


def client_address(request):
    """Return the client's IP address, trusting PROXY_COUNT proxies' headers.

    With no trusted proxy, X-Forwarded-For is ignored: a client can write any
    value in it. Behind N proxies, the Nth address from the right is the one the
    outermost trusted proxy saw.
    """
    address = request.META.get("REMOTE_ADDR", "")
    proxies = settings.PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            address = hops[-min(proxies, len(hops))]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    # PostgreSQL's inet has no zone: "fe80::1%eth0" is kept as "fe80::1".
    if getattr(ip, "scope_id", None):
        ip = ipaddress.ip_address(str(ip).partition("%")[0])
    return str(ip)


def storable(text, length):
    """Return `text` cut to `length`, with U+FFFD in place of each NUL.

    PostgreSQL rejects NUL in text, and a request path can carry one (%00).
    """
    return str(text).replace("\x00", "\ufffd")[:length]


def route_of(request):
    """Return "METHOD /path", without the query string, which may carry names."""
    return storable(f"{request.method} {request.path}", 255)


def _user_fields(request):
    user = getattr(request, "user", None) if request is not None else None
    if user is None or not user.is_authenticated:
        return {"user_id": None, "username": ""}
    return {"user_id": user.pk, "username": user.get_username()[:150]}


def _request_fields(request):
    if request is None:
        return {"client_address": None, "route": "", "request_id": ""}
    return {
        "client_address": client_address(request),
        "route": route_of(request),
        "request_id": current_request_id()[:64],
    }


def entry(request, action, outcome, model=None, object_id="", patient_id=None):
    """Return an unsaved AuditEntry for `request` (None outside a request)."""
    return AuditEntry(
        action=action,
        outcome=outcome,
        object_type=model._meta.label_lower if model is not None else "",
        object_id=storable(object_id or "", 64),
        patient_id=patient_id,
        **_user_and_request_fields(request),
    )


def _user_and_request_fields(request):
    return {**_user_fields(request), **_request_fields(request)}


def record(request, action, outcome, **fields):
    """Write one entry now and return it.

    save() sends one INSERT; bulk_create() would wrap it in BEGIN and COMMIT
    outside a transaction.
    """
    audit_entry = entry(request, action, outcome, **fields)
    audit_entry.save()
    return audit_entry


# Reads reported by views


def note_listed(request, objects):
    """Report the rows a list page showed; the middleware records them."""
    audit = _current.get()
    if audit is None:
        return
    audited = audited_models()
    for obj in objects:
        if obj._meta.label_lower in audited:
            audit.reads.append((Action.LIST, obj))


def note_read(request, obj):
    """Report one object that a request read, such as the row of a stored file."""
    audit = _current.get()
    if audit is not None and patient_attribute(type(obj)) is not None:
        audit.reads.append((Action.READ, obj))


def find_file_owner(model_label, name):
    """Return the row of `model_label` that stores the file `name`, or None."""
    model = apps.get_model(model_label)
    file_fields = [
        f.name for f in model._meta.get_fields() if f.get_internal_type() == "FileField"
    ]
    if not file_fields:
        return None
    match = Q()
    for field_name in file_fields:
        match |= Q(**{field_name: name})
    return model._base_manager.filter(match).first()


# Changes, from model signals


def _record_change(instance, action):
    model = type(instance)
    if patient_attribute(model) is None:
        return
    audit = _current.get()
    request = audit.request if audit is not None else None
    if audit is not None:
        audit.changed = True
    record(
        request,
        action,
        Outcome.SUCCESS,
        model=model,
        object_id=instance.pk,
        patient_id=patient_id_of(instance),
    )


def on_save(sender, instance, created, raw=False, **kwargs):
    if not raw:
        _record_change(instance, Action.CREATE if created else Action.UPDATE)


def on_delete(sender, instance, **kwargs):
    _record_change(instance, Action.DELETE)


def on_login_failed(sender, credentials, request=None, **kwargs):
    if request is None:
        return
    locked_out = getattr(request, "axes_locked_out", False)
    # The token endpoint passes DRF's request; its `user` would authenticate.
    request = getattr(request, "_request", request)
    audit_entry = entry(
        request,
        Action.LOGIN_FAILED,
        Outcome.LOCKED_OUT if locked_out else Outcome.FAILED,
    )
    audit_entry.username = str(credentials.get("username") or "")[:150]
    audit_entry.save()


def on_logged_in(sender, request, user, **kwargs):
    if request is not None:
        record(request, Action.LOGIN, Outcome.SUCCESS)


def connect_signals():
    post_save.connect(on_save, dispatch_uid="copilot.audit.on_save")
    post_delete.connect(on_delete, dispatch_uid="copilot.audit.on_delete")
    user_login_failed.connect(on_login_failed, dispatch_uid="copilot.audit.failed")
    user_logged_in.connect(on_logged_in, dispatch_uid="copilot.audit.logged_in")


# Reads and failed attempts, from the middleware


def _viewset_target(request, view_func, view_kwargs):
    viewset = getattr(view_func, "cls", None)
    actions = getattr(view_func, "actions", None) or {}
    queryset = getattr(viewset, "queryset", None)
    if queryset is None:
        return None
    model = queryset.model
    action = VIEWSET_ACTIONS.get(actions.get(request.method.lower()))
    if action is None or patient_attribute(model) is None:
        return None
    lookup = viewset.lookup_url_kwarg or viewset.lookup_field
    object_id = view_kwargs.get(lookup, "")
    patient_id = view_kwargs.get("patient_id")
    return Target(action, model, object_id, _as_int(patient_id))


def _admin_target(request, match):
    for label in audited_models():
        app_label, model_name = label.split(".")
        prefix = f"{app_label}_{model_name}_"
        if not match.url_name or not match.url_name.startswith(prefix):
            continue
        view = match.url_name[len(prefix) :]
        action = ADMIN_VIEWS.get(view)
        if request.method == "POST":
            action = {"change": Action.UPDATE, "delete": Action.DELETE}.get(
                view, action if view == "add" else None
            )
        elif view == "add":
            return None
        if action is None:
            return None
        object_id = match.kwargs.get("object_id", "")
        return Target(action, apps.get_model(label), object_id)
    return None


def _file_target(view_kwargs):
    permission = view_kwargs.get("permission", "")
    app_label, _, codename = permission.partition(".view_")
    if not codename:
        return None
    return Target(Action.READ, apps.get_model(app_label, codename))


def _as_int(value):
    """Return value as an id, or None when it is not one an id column can hold."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 <= number <= MAX_ID else None


def _patient_id_for(target):
    """Look up the patient id of a target named by id, unless the route has it."""
    if target.patient_id is not None or not target.object_id:
        return target.patient_id
    attribute = patient_attribute(target.model)
    if attribute == target.model._meta.pk.attname:
        return _as_int(target.object_id)
    try:
        return (
            target.model._base_manager.filter(pk=target.object_id)
            .values_list(attribute, flat=True)
            .first()
        )
    except (ValueError, TypeError):
        return None


class AuditMiddleware:
    """Record reads of audited objects and failed attempts to change them."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        audit = RequestAudit(request)
        token = _current.set(audit)
        try:
            response = self.get_response(request)
            self.record(audit, response)
        finally:
            _current.reset(token)
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        audit = _current.get()
        if audit is None:
            return None
        match = request.resolver_match
        if match is not None and match.namespace == "admin":
            audit.target = _admin_target(request, match)
        elif getattr(view_func, "audit_file_reads", False):
            audit.target = _file_target(view_kwargs)
        else:
            audit.target = _viewset_target(request, view_func, view_kwargs)
        return None

    def record(self, audit, response):
        target = audit.target
        if target is None and not audit.reads:
            return
        request = audit.request
        if target is not None and target.model is not None:
            if target.action == Action.LIST and request.method == "GET":
                audit.reads.extend(_admin_listed(response))

        if audit.reads and response.status_code < 400:
            record_reads(request, audit.reads)
            return
        if target is None or (target.action not in READ_ACTIONS and audit.changed):
            return
        outcome = outcome_for_status(response.status_code)
        if target.action not in READ_ACTIONS and outcome == Outcome.SUCCESS:
            # The admin returns 200 for a form sent back with errors.
            outcome = Outcome.INVALID
        elif target.action == Action.READ and 300 <= response.status_code < 400:
            # The admin redirects a page of an unknown object to its index.
            outcome = Outcome.NOT_FOUND
        record(
            request,
            target.action,
            outcome,
            model=target.model,
            object_id=target.object_id,
            patient_id=_patient_id_for(target),
        )


# The columns that every entry of a request shares, then those that differ.
SHARED_COLUMNS = (
    "created_at",
    "user_id",
    "username",
    "client_address",
    "route",
    "request_id",
    "outcome",
)
READ_COLUMNS = ("action", "object_type", "object_id", "patient_id")
READ_ARRAY_TYPES = ("varchar[]", "varchar[]", "varchar[]", "bigint[]")


def record_reads(request, reads):
    """Write one successful entry for each (action, object) of `reads`.

    A list page reads up to 200 rows. On PostgreSQL they go in as one INSERT that
    takes the differing columns as arrays: a short statement for PostgreSQL to
    parse and plan, and no model instances to build. Written as 50 model instances
    with bulk_create, a page's entries cost a worker about 2 ms of CPU and
    PostgreSQL as much again (docs/benchmarks.md).
    """
    shared = {
        "created_at": timezone.now(),
        "outcome": Outcome.SUCCESS,
        **_user_and_request_fields(request),
    }
    attributes = audited_models()
    rows = []
    for action, obj in reads:
        label = obj._meta.label_lower
        patient_id = getattr(obj, attributes[label], None)
        rows.append((action, label, str(obj.pk)[:64], patient_id))

    connection = connections[router.db_for_write(AuditEntry)]
    if connection.vendor != "postgresql":
        AuditEntry.objects.bulk_create(
            AuditEntry(**shared, **dict(zip(READ_COLUMNS, row, strict=True)))
            for row in rows
        )
        return
    values = [shared[name] for name in SHARED_COLUMNS]
    values += [list(column) for column in zip(*rows, strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(_reads_insert_sql(connection), values)


def _reads_insert_sql(connection):
    quote = connection.ops.quote_name
    columns = ", ".join(
        quote(AuditEntry._meta.get_field(name).column)
        for name in (*SHARED_COLUMNS, *READ_COLUMNS)
    )
    shared = ", ".join(
        "%s::inet" if name == "client_address" else "%s" for name in SHARED_COLUMNS
    )
    arrays = ", ".join(f"%s::{kind}" for kind in READ_ARRAY_TYPES)
    names = [f"c{index}" for index in range(len(READ_COLUMNS))]
    table = quote(AuditEntry._meta.db_table)
    # ORDER BY the position, so the entries' ids follow the order of the page.
    return (
        f"INSERT INTO {table} ({columns}) "
        f"SELECT {shared}, {', '.join(names)} "
        f"FROM unnest({arrays}) WITH ORDINALITY AS r({', '.join(names)}, position) "
        "ORDER BY position"
    )


def _admin_listed(response):
    """Return the rows an admin change list page showed, if it is one."""
    context = getattr(response, "context_data", None) or {}
    changelist = context.get("cl")
    rows = getattr(changelist, "result_list", None)
    if rows is None:
        return []
    return [(Action.LIST, obj) for obj in rows]
