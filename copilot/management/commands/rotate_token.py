from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

from copilot import audit
from copilot.models import AuditEntry


class Command(BaseCommand):
    help = (
        "Replace a user's API token with a new one and print it, or with "
        "--revoke delete it so the user has none."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--revoke", action="store_true", help="Delete the token, make no new one."
        )

    def handle(self, *args, username, revoke=False, **options):
        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"No user named '{username}'.")

        with transaction.atomic():
            had_token = Token.objects.filter(user=user).delete()[0] > 0
            token = None if revoke else Token.objects.create(user=user)
            action = (
                AuditEntry.Action.TOKEN_REVOKED
                if revoke
                else AuditEntry.Action.TOKEN_ROTATED
            )
            audit.record(
                None,
                action,
                AuditEntry.Outcome.SUCCESS,
                model=User,
                object_id=user.pk,
            )

        if token is None:
            state = "revoked" if had_token else "had no token; nothing to revoke"
            self.stdout.write(f"Token of user '{username}' {state}.")
        else:
            self.stdout.write(token.key)
