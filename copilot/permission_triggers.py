"""Database triggers that change PermissionsVersion with every change of permissions.

Each change of the watched tables replaces the version with a random value in the
same transaction. Rows of the many-to-many tables also change without any Django
signal: saved or deleted directly, in bulk or in SQL.

The migration that creates PermissionsVersion installs the triggers, and
`ensure_installed` installs them again after every `migrate`. On SQLite, Django
alters a table by copying it into a new one, which loses its triggers, so a later
migration of a watched table (a Django upgrade, say) would otherwise leave
permissions cached for good.
"""

from django.conf import settings

POSTGRESQL_FUNCTION = """
CREATE OR REPLACE FUNCTION new_permissions_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO permissions_version (id, version)
    VALUES (1, md5(random()::text || clock_timestamp()::text))
    ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version;
    RETURN NULL;
END
$$;
"""
POSTGRESQL_TRIGGER = """
CREATE OR REPLACE TRIGGER new_permissions_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION new_permissions_version();
"""
POSTGRESQL_DROP = "DROP TRIGGER IF EXISTS new_permissions_version ON {table};"
SQLITE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS new_permissions_version_{table}_{event}
AFTER {event} ON {table}
BEGIN
    INSERT INTO permissions_version (id, version)
    VALUES (1, lower(hex(randomblob(16))))
    ON CONFLICT (id) DO UPDATE SET version = excluded.version;
END;
"""
SQLITE_DROP = "DROP TRIGGER IF EXISTS new_permissions_version_{table}_{event};"
SQLITE_EVENTS = ("INSERT", "UPDATE", "DELETE")


def watched_tables(apps):
    """Return the tables whose rows decide a user's permission labels."""
    user = apps.get_model(settings.AUTH_USER_MODEL)
    group = apps.get_model("auth", "Group")
    through = [
        user._meta.get_field("groups").remote_field.through,
        user._meta.get_field("user_permissions").remote_field.through,
        group._meta.get_field("permissions").remote_field.through,
    ]
    return [model._meta.db_table for model in through] + [
        apps.get_model("auth", "Permission")._meta.db_table,
        apps.get_model("contenttypes", "ContentType")._meta.db_table,
    ]


def install(connection, apps):
    """Create the triggers, or replace them where they exist."""
    statements = _per_table(connection, apps, POSTGRESQL_TRIGGER, SQLITE_TRIGGER)
    if connection.vendor == "postgresql":
        statements.insert(0, POSTGRESQL_FUNCTION)
    _execute(connection, statements)


def uninstall(connection, apps):
    statements = _per_table(connection, apps, POSTGRESQL_DROP, SQLITE_DROP)
    if connection.vendor == "postgresql":
        statements.append("DROP FUNCTION IF EXISTS new_permissions_version();")
    _execute(connection, statements)


def _per_table(connection, apps, postgresql, sqlite):
    """Return a template filled for each watched table (and event on SQLite)."""
    tables = watched_tables(apps)
    if connection.vendor == "postgresql":
        quote = connection.ops.quote_name
        return [postgresql.format(table=quote(table)) for table in tables]
    if connection.vendor == "sqlite":
        return [
            sqlite.format(table=table, event=event)
            for table in tables
            for event in SQLITE_EVENTS
        ]
    return []


def _execute(connection, statements):
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def ensure_installed(sender, using, apps=None, **kwargs):
    """post_migrate receiver: install the triggers where PermissionsVersion exists."""
    from django.apps import apps as global_apps
    from django.db import connections

    apps = apps or global_apps
    connection = connections[using]
    table = global_apps.get_model("copilot", "PermissionsVersion")._meta.db_table
    if table in connection.introspection.table_names():
        install(connection, apps)
