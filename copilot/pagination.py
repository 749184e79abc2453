from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    """Pages of `count`, `next`, `previous` and `results`, sized by ?page_size=."""

    page_size_query_param = "page_size"
    max_page_size = 200
