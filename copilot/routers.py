from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """A router whose URLs match with and without a trailing slash."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"
