from rest_framework import serializers

from documents.serializers import DocumentSerializer
from patients.models import MAX_AGE, Patient
from scans.serializers import ScanSerializer


class PatientSerializer(serializers.ModelSerializer):
    age = serializers.IntegerField(
        min_value=0, max_value=MAX_AGE, required=False, allow_null=True
    )

    class Meta:
        model = Patient
        fields = ["id", "mrn", "name", "age", "gender", "created_at"]
        read_only_fields = ["id", "created_at"]
        # The unique constraint, not a query before the insert, rejects a taken
        # MRN, so the view can return 409.
        extra_kwargs = {"mrn": {"validators": []}}

    def validate_mrn(self, value):
        value = value.strip()
        if not value:
            raise serializers.ValidationError("This field may not be blank.")
        return value

    def validate_name(self, value):
        value = value.strip()
        if not value:
            raise serializers.ValidationError("This field may not be blank.")
        return value


class PatientListSerializer(PatientSerializer):
    scans_count = serializers.IntegerField(read_only=True)
    documents_count = serializers.IntegerField(read_only=True)

    class Meta(PatientSerializer.Meta):
        fields = PatientSerializer.Meta.fields + ["scans_count", "documents_count"]


class PatientDetailSerializer(PatientSerializer):
    scans = ScanSerializer(many=True, read_only=True)
    documents = DocumentSerializer(many=True, read_only=True)

    class Meta(PatientSerializer.Meta):
        fields = PatientSerializer.Meta.fields + ["scans", "documents"]


class PatientSummarySerializer(serializers.ModelSerializer):
    """The `patient` part of an upload response."""

    class Meta:
        model = Patient
        fields = ["id", "name", "mrn"]
