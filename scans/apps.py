from django.apps import AppConfig


class ScansConfig(AppConfig):
    name = "scans"
    verbose_name = "X-ray scans"

    def ready(self):
        from scans import signals  # noqa: F401
