"""The admin workspace end to end, in headless Chromium driven by Selenium.

Uses Debian's chromium and chromium-driver at fixed paths, so Selenium never
looks for or downloads a browser or a driver of its own. Screenshots go to
screenshots/, which git ignores.
"""

import io
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from PIL import Image

from conftest import CHEST_DICOM, CHEST_MRN, dicom_test_file, stored_files, upload
from documents.services import create_document
from patients.models import Patient
from scans.models import Scan
from scans.services import create_scan

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
PASSWORD = "x-ray-pass-1"
# The permissions of the "Radiologists" group that the migrations create.
RADIOLOGIST_PERMISSIONS = [
    "view_patient",
    "view_scan",
    "add_scan",
    "delete_scan",
    "view_patientdocument",
    "add_patientdocument",
    "delete_patientdocument",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is missing: apt-get install chromium chromium-driver",
    ),
]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


@pytest.fixture
def radiologist_user(django_user_model):
    user = django_user_model.objects.create_user(
        "dr-house", password=PASSWORD, is_staff=True
    )
    user.user_permissions.set(
        Permission.objects.filter(codename__in=RADIOLOGIST_PERMISSIONS)
    )
    return user


class TestAdminWorkspace:
    def screenshot(self, browser, name):
        SCREENSHOTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))

    def wait_for_image(self, browser, css_selector):
        from selenium.webdriver.support.ui import WebDriverWait

        def loaded(driver):
            return driver.execute_script(
                "const image = document.querySelector(arguments[0]);"
                "return image !== null && image.complete && image.naturalWidth > 0;",
                css_selector,
            )

        WebDriverWait(browser, 10).until(loaded)
        return browser.find_element("css selector", css_selector)

    def natural_size(self, browser, image):
        return tuple(
            browser.execute_script(
                "return [arguments[0].naturalWidth, arguments[0].naturalHeight];",
                image,
            )
        )

    def stored_size(self, local_storage, name):
        return Image.open(io.BytesIO(stored_files(local_storage)[name])).size

    def test_it_uploads_previews_and_deletes_a_dicom(
        self,
        live_server,
        browser,
        radiologist_user,
        local_storage,
        chest_jpeg,
        report_pdf,
    ):
        from selenium.webdriver.common.by import By

        other = Patient.objects.create(
            mrn="MRN001", name="John Doe", age=45, gender="Male"
        )
        create_scan(other, upload("hand.jpg", chest_jpeg), body_part="HAND")
        create_document(other, upload("lab.pdf", report_pdf), document_name="Lab")
        patient = Patient.objects.create(
            mrn=CHEST_MRN, name="Chest Patient", age=60, gender="Female"
        )
        files_before = stored_files(local_storage)

        browser.get(f"{live_server.url}/admin/login/?next=/admin/patients/patient/")
        browser.find_element(By.NAME, "username").send_keys(radiologist_user.username)
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
        assert len(rows) == 2
        counts = browser.find_elements(By.CSS_SELECTOR, "td.field-scans_count")
        assert sorted(cell.text for cell in counts) == ["0", "1"]
        self.screenshot(browser, "01-patient-list")

        search = browser.find_element(By.ID, "searchbar")
        search.send_keys(CHEST_MRN)
        search.submit()
        rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
        assert [row.find_element(By.TAG_NAME, "th").text for row in rows] == [CHEST_MRN]
        self.screenshot(browser, "02-patient-search")

        browser.find_element(By.LINK_TEXT, CHEST_MRN).click()
        assert f"/admin/patients/patient/{patient.pk}/change/" in browser.current_url
        browser.find_element(By.NAME, "scans-2-0-file").send_keys(
            str(dicom_test_file(CHEST_DICOM))
        )
        browser.find_element(By.NAME, "_continue").click()
        browser.find_element(By.CSS_SELECTOR, "ul.messagelist li.success")

        scan = Scan.objects.get(patient=patient)
        assert scan.body_part == "CHEST"
        assert scan.dicom_patient_id == CHEST_MRN
        assert set(stored_files(local_storage)) == set(files_before) | set(
            scan.stored_names
        )
        thumbnail = self.wait_for_image(browser, "img.scan-thumbnail")
        assert self.natural_size(browser, thumbnail) == self.stored_size(
            local_storage, scan.thumbnail.name
        )
        browser.execute_script(
            "document.getElementById('scans-group').scrollIntoView()"
        )
        self.screenshot(browser, "03-patient-page")

        browser.find_element(By.LINK_TEXT, "Preview").click()
        browser.switch_to.window(browser.window_handles[-1])
        preview = self.wait_for_image(browser, "img")
        assert self.natural_size(browser, preview) == self.stored_size(
            local_storage, scan.preview.name
        )
        self.screenshot(browser, "04-preview")
        browser.close()
        browser.switch_to.window(browser.window_handles[0])

        browser.find_element(By.CSS_SELECTOR, "a.inlineviewlink").click()
        self.wait_for_image(browser, "img.scan-preview")
        self.screenshot(browser, "05-scan-page")
        browser.find_element(By.CSS_SELECTOR, "a.deletelink").click()
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        browser.find_element(By.CSS_SELECTOR, "ul.messagelist li.success")
        self.screenshot(browser, "06-scan-deleted")

        assert not Scan.objects.filter(patient=patient).exists()
        assert stored_files(local_storage) == files_before
