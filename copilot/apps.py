from django.apps import AppConfig


class CopilotConfig(AppConfig):
    name = "copilot"
    verbose_name = "Audit trail and storage"

    def ready(self):
        from copilot import audit

        audit.connect_signals()
