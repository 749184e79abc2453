import pytest

from conftest import make_pdf, stored_files, upload
from documents.models import PatientDocument
from documents.services import create_document

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/documents/patientdocument/"


def make_document(patient, pdf, name="Blood work"):
    return create_document(patient, upload("lab.pdf", pdf), document_name=name)


def fetch(client, url):
    response = client.get(url)
    content = b"".join(response.streaming_content) if response.streaming else b""
    return response.status_code, content


class TestDocumentList:
    def test_it_shows_open_links(self, staff_client, patient, report_pdf):
        document = make_document(patient, report_pdf)

        response = staff_client.get(LIST_URL)

        assert response.status_code == 200
        assert [row.pk for row in response.context["cl"].result_list] == [document.pk]
        html = response.content.decode()
        assert f'href="{LIST_URL}{document.pk}/file/"' in html
        assert "Blood work" in html
        assert "John Doe (MRN001)" in html

    def test_it_searches_document_name(self, staff_client, patient, report_pdf):
        make_document(patient, report_pdf, name="Blood work")
        wanted = make_document(patient, report_pdf, name="Discharge letter")

        response = staff_client.get(LIST_URL, {"q": "discharge"})

        assert [row.pk for row in response.context["cl"].result_list] == [wanted.pk]

    def test_it_has_no_add_page(self, staff_client):
        response = staff_client.get(f"{LIST_URL}add/")

        assert response.status_code == 403


class TestDocumentPage:
    def test_it_shows_open_link_and_upload_details(
        self, staff_client, patient, report_pdf
    ):
        document = make_document(patient, report_pdf)

        response = staff_client.get(f"{LIST_URL}{document.pk}/change/")

        assert response.status_code == 200
        html = response.content.decode()
        assert f'href="{LIST_URL}{document.pk}/file/"' in html
        assert document.sha256 in html
        assert "lab.pdf" in html
        assert 'name="document_name"' not in html


class TestDocumentFileView:
    def test_it_redirects_to_the_stored_file(
        self, staff_client, patient, report_pdf, local_storage
    ):
        document = make_document(patient, report_pdf)

        response = staff_client.get(f"{LIST_URL}{document.pk}/file/")

        assert response.status_code == 302
        assert response["Location"] == f"http://testserver/media/{document.file.name}"
        assert "no-store" in response["Cache-Control"]
        assert fetch(staff_client, response["Location"]) == (200, report_pdf)

    def test_it_requires_login(self, client, patient, report_pdf):
        document = make_document(patient, report_pdf)

        response = client.get(f"{LIST_URL}{document.pk}/file/")

        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")

    def test_it_requires_view_permission(
        self, staff_client, radiologist, patient, report_pdf
    ):
        document = make_document(patient, report_pdf)
        radiologist.groups.clear()

        response = staff_client.get(f"{LIST_URL}{document.pk}/file/")

        assert response.status_code == 403

    def test_it_rejects_unknown_document(self, staff_client, patient, report_pdf):
        document = make_document(patient, report_pdf)

        response = staff_client.get(f"{LIST_URL}{document.pk + 1}/file/")

        assert response.status_code == 404


class TestDeleteDocument:
    def test_it_deletes_the_stored_file(
        self,
        staff_client,
        patient,
        report_pdf,
        local_storage,
        django_capture_on_commit_callbacks,
    ):
        document = make_document(patient, report_pdf)
        kept = make_document(patient, make_pdf("Kept."))

        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(
                f"{LIST_URL}{document.pk}/delete/", {"post": "yes"}
            )

        assert response.status_code == 302
        assert list(PatientDocument.objects.all()) == [kept]
        assert stored_files(local_storage) == {kept.file.name: make_pdf("Kept.")}

    def test_it_bulk_deletes_stored_files(
        self,
        staff_client,
        patient,
        report_pdf,
        local_storage,
        django_capture_on_commit_callbacks,
    ):
        documents = [make_document(patient, report_pdf) for _ in range(3)]
        kept = documents.pop()

        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(
                LIST_URL,
                {
                    "action": "delete_selected",
                    "_selected_action": [document.pk for document in documents],
                    "post": "yes",
                },
            )

        assert response.status_code == 302
        assert list(PatientDocument.objects.all()) == [kept]
        assert sorted(stored_files(local_storage)) == [kept.file.name]
