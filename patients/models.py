from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Count, Max, OuterRef, Subquery
from django.db.models.functions import Coalesce

MAX_AGE = 150


def _count_of(model, related_field):
    rows = (
        model.objects.filter(**{related_field: OuterRef("pk")})
        .order_by()
        .values(related_field)
        .annotate(total=Count("pk"))
        .values("total")
    )
    return Coalesce(Subquery(rows), 0)


class PatientQuerySet(models.QuerySet):
    def with_counts(self):
        """Annotate scans_count and documents_count in the same query."""
        from documents.models import PatientDocument
        from scans.models import Scan

        return self.annotate(
            scans_count=_count_of(Scan, "patient"),
            documents_count=_count_of(PatientDocument, "patient"),
        )

    def with_last_scan_date(self):
        """Annotate last_scan_date, the latest scan_date of the patient's scans."""
        from scans.models import Scan

        latest = (
            Scan.objects.filter(patient=OuterRef("pk"))
            .order_by()
            .values("patient")
            .annotate(latest=Max("scan_date"))
            .values("latest")
        )
        return self.annotate(last_scan_date=Subquery(latest))


class Patient(models.Model):
    mrn = models.CharField("MRN", max_length=50, unique=True)
    name = models.CharField(max_length=200)
    age = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(MAX_AGE)]
    )
    gender = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PatientQuerySet.as_manager()

    class Meta:
        db_table = "patients"
        ordering = ["-created_at", "-id"]
        # Serves the default ordering, so a page of the list reads its rows
        # from the index instead of sorting the whole table.
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="idx_patients_created_at"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(age__lte=MAX_AGE), name="patients_age_range"
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.mrn})"
