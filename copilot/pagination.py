from rest_framework import pagination

from copilot import audit


class PageNumberPagination(pagination.PageNumberPagination):
    """Pages of `count`, `next`, `previous` and `results`, sized by ?page_size=.

    The rows of each page are reported to the audit trail as listed.
    """

    page_size_query_param = "page_size"
    max_page_size = 200

    def paginate_queryset(self, queryset, request, view=None):
        page = super().paginate_queryset(queryset, request, view)
        if page is not None:
            audit.note_listed(request, page)
        return page
