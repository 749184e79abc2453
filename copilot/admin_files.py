"""Admin links to stored files that work for every storage backend.

A link points at an admin URL such as /admin/scans/scan/5/preview/, which checks
the login and the view permission, then redirects to the file's URL as the
storage builds it: /media/... for the local disk, or a delivery URL (signed when
the storage signs them) for Cloudinary. Pages link to these views instead of
embedding storage URLs, and nothing here opens, measures or checks a stored file,
so rendering a page never sends a request to the storage.
"""

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from copilot.storage import file_url


def stored_file_url_name(model, field_name):
    """Return the URL name (without the admin namespace) of a file's redirect."""
    opts = model._meta
    return f"{opts.app_label}_{opts.model_name}_{field_name}"


def stored_file_path(obj, field_name):
    """Return the admin URL that redirects to `obj`'s file, or None if it has none."""
    if not getattr(obj, field_name):
        return None
    name = stored_file_url_name(type(obj), field_name)
    return reverse(f"admin:{name}", args=[obj.pk])


def stored_file_link(obj, field_name, text):
    """Return an <a> that opens `obj`'s file in a new tab, or "-" if it has none."""
    url = stored_file_path(obj, field_name)
    if url is None:
        return "-"
    return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, text)


def stored_image_tag(obj, field_name, alt, css_class):
    """Return an <img> of `obj`'s stored image, or "-" if it has none."""
    url = stored_file_path(obj, field_name)
    if url is None:
        return "-"
    return format_html(
        '<img src="{}" alt="{}" class="{}" loading="lazy">', url, alt, css_class
    )


class StoredFileLinksMixin:
    """A ModelAdmin mixin that adds a redirect view for each field in `file_fields`.

    The admin site's login check runs first. The views then return 404 for an
    unknown object or an empty field, and 403 to a user without the view permission.
    """

    file_fields = ()

    def get_urls(self):
        file_urls = [
            path(
                f"<path:object_id>/{field_name}/",
                self.admin_site.admin_view(self.stored_file_view),
                {"field_name": field_name},
                name=stored_file_url_name(self.model, field_name),
            )
            for field_name in self.file_fields
        ]
        return file_urls + super().get_urls()

    def stored_file_view(self, request, object_id, field_name):
        """Redirect to the URL of one stored file, built without a storage request."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with ID {object_id!r}.")
        if not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        url = file_url(request, getattr(obj, field_name))
        if url is None:
            raise Http404(f"{self.opts.verbose_name} {obj.pk} has no {field_name}.")
        # admin_view() marks the response never_cache, so no shared cache keeps
        # a redirect to a signed URL.
        return HttpResponseRedirect(url)
