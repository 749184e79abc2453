from django.apps import AppConfig


class CopilotConfig(AppConfig):
    name = "copilot"
    verbose_name = "Audit trail and storage"

    def ready(self):
        from django.db.models.signals import post_migrate

        from copilot import audit, permission_triggers

        audit.connect_signals()
        post_migrate.connect(
            permission_triggers.ensure_installed,
            sender=self,
            dispatch_uid="copilot.permission_triggers",
        )
