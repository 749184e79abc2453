"""Tests of the Cloudinary-compatible test server, driven by the real SDK.

The SDK is pointed at the server with `upload_prefix`; nothing is patched.
These tests need no database and run with or without pytest-django.
"""

import hashlib
import io
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cloudinary
import cloudinary.api
import cloudinary.exceptions
import cloudinary.uploader
import cloudinary.utils
import pytest
import requests
from PIL import Image

from copilot.testing.cloudinary_server import MIN_CHUNK_SIZE, CloudinaryServer

REPO_ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server():
    with CloudinaryServer(min_chunk_size=0, timeout_delay=3) as running:
        yield running


@pytest.fixture(autouse=True)
def sdk(server):
    """Point the SDK at the shared server and start each test from empty."""
    server.reset()
    with server.configure_sdk() as config:
        yield config


def image_bytes(image_format="PNG", size=(64, 48), color=(200, 30, 30)):
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=image_format)
    return buffer.getvalue()


def noise_png(side, seed=0):
    """A grayscale PNG of random pixels, about side * side bytes long."""
    pixels = random.Random(seed).randbytes(side * side)
    buffer = io.BytesIO()
    Image.frombytes("L", (side, side), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pdf_bytes():
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(buffer, format="PDF")
    return buffer.getvalue()


def upload_ranges(server, upload_id=None):
    return [
        entry["content_range"]
        for entry in server.request_log
        if entry["operation"] == "upload"
        and entry["content_range"]
        and upload_id in (None, entry["upload_id"])
    ]


# Upload API.


def test_image_upload_response_and_bytes(server):
    data = image_bytes()

    result = cloudinary.uploader.upload(io.BytesIO(data), filename="scan.png")

    public_id = result["public_id"]
    assert re.fullmatch(r"[a-z0-9]{20}", public_id)
    assert isinstance(result["version"], int)
    assert result["format"] == "png"
    assert (result["width"], result["height"]) == (64, 48)
    assert result["resource_type"] == "image"
    assert result["type"] == "upload"
    assert result["bytes"] == len(data)
    assert result["etag"] == hashlib.md5(data).hexdigest()
    assert result["original_filename"] == "scan"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result["created_at"])
    assert re.fullmatch(r"[0-9a-f]{32}", result["asset_id"])
    path = f"cloud/image/upload/v{result['version']}/{public_id}.png"
    assert result["secure_url"] == f"https://res.cloudinary.com/{path}"
    assert result["url"] == f"http://res.cloudinary.com/{path}"
    assert cloudinary.utils.verify_api_response_signature(
        public_id, result["version"], result["signature"]
    )
    assert server.fetch(result["secure_url"]) == (200, data)
    assert server.get_resource(public_id).data == data


def test_path_upload_and_sdk_url(server, tmp_path):
    data = image_bytes("JPEG", size=(30, 20))
    path = tmp_path / "chest.jpg"
    path.write_bytes(data)

    result = cloudinary.uploader.upload(str(path), use_filename=True)

    assert re.fullmatch(r"chest_[a-z0-9]{6}", result["public_id"])
    assert result["format"] == "jpg"
    url = cloudinary.CloudinaryImage(result["public_id"], format="jpg").build_url()
    assert url.startswith("http://res.cloudinary.com/cloud/image/upload/")
    assert server.fetch(url) == (200, data)


def test_raw_public_id_keeps_extension(server, tmp_path):
    data = pdf_bytes()
    path = tmp_path / "lab.pdf"
    path.write_bytes(data)

    result = cloudinary.uploader.upload(
        str(path), resource_type="raw", folder="reports"
    )

    assert re.fullmatch(r"reports/[a-z0-9]{20}\.pdf", result["public_id"])
    assert "format" not in result
    assert result["resource_type"] == "raw"
    assert result["secure_url"].endswith(
        f"/raw/upload/v{result['version']}/{result['public_id']}"
    )
    assert server.fetch(result["secure_url"]) == (200, data)


def test_use_filename_random_suffix():
    data = image_bytes()

    unique = cloudinary.uploader.upload(
        io.BytesIO(data), filename="chest.png", folder="scans", use_filename=True
    )
    plain = cloudinary.uploader.upload(
        io.BytesIO(data),
        filename="chest.png",
        folder="scans",
        use_filename=True,
        unique_filename=False,
    )

    assert re.fullmatch(r"scans/chest_[a-z0-9]{6}", unique["public_id"])
    assert plain["public_id"] == "scans/chest"
    assert plain["folder"] == "scans"


def test_public_id_overwrite(server):
    first, second, third = (
        image_bytes(color=color) for color in ("red", "green", "blue")
    )

    created = cloudinary.uploader.upload(first, public_id="fixed/one")
    replaced = cloudinary.uploader.upload(second, public_id="fixed/one")
    skipped = cloudinary.uploader.upload(third, public_id="fixed/one", overwrite=False)

    assert created["public_id"] == "fixed/one"
    assert replaced["public_id"] == "fixed/one"
    assert replaced["version"] > created["version"]
    assert replaced["overwritten"] is True
    assert skipped["existing"] is True
    assert skipped["version"] == replaced["version"]
    assert server.get_resource("fixed/one").data == second
    assert len(server.resources) == 1


def test_unreadable_image_rejected(server):
    with pytest.raises(cloudinary.exceptions.BadRequest, match="Invalid image file"):
        cloudinary.uploader.upload(b"this is not an image", filename="fake.png")

    raw = cloudinary.uploader.upload(
        b"this is not an image", filename="notes.txt", resource_type="raw"
    )
    assert raw["public_id"].endswith(".txt")
    assert [item.resource_type for item in server.resources] == ["raw"]


def test_auto_resource_type_detection():
    image = cloudinary.uploader.upload(image_bytes(), resource_type="auto")
    raw = cloudinary.uploader.upload(
        b"plain text", filename="notes.txt", resource_type="auto"
    )

    assert image["resource_type"] == "image"
    assert image["format"] == "png"
    assert raw["resource_type"] == "raw"
    assert raw["public_id"].endswith(".txt")


def test_upload_parameters_recorded(server):
    data = image_bytes()

    result = cloudinary.uploader.upload(
        io.BytesIO(data),
        filename="MRN123 chest.png",
        tags=["xray", "chest"],
        context={"study": "CR-7731", "note": "a=b|c"},
        folder="scans",
        invalidate=True,
    )

    assert result["tags"] == ["xray", "chest"]
    assert result["context"] == {"custom": {"study": "CR-7731", "note": "a=b|c"}}
    stored = server.get_resource(result["public_id"])
    assert stored.params["tags"] == "xray,chest"
    assert stored.params["invalidate"] == "1"
    assert stored.filename == "MRN123 chest.png"
    assert stored.original_filename == "MRN123 chest"
    hits = server.mentions("mrn123")
    assert f"resource {result['public_id']}: filename" in hits
    assert any(hit.startswith("request 0 (upload): filename") for hit in hits)
    assert server.mentions("cr-7731") == [
        f"resource {result['public_id']}: context['study']",
        f"resource {result['public_id']}: params['context']",
        "request 0 (upload): params['context']",
    ]


# Chunked uploads.


def test_upload_large_image_chunks(server):
    data = noise_png(2300)  # about 5 MB of incompressible pixels
    assert len(data) > 5 * MIB

    result = cloudinary.uploader.upload_large(
        io.BytesIO(data), chunk_size=MIB, resource_type="image", filename="big.png"
    )

    assert result["format"] == "png"
    assert (result["width"], result["height"]) == (2300, 2300)
    assert result["bytes"] == len(data)
    assert server.fetch(result["secure_url"]) == (200, data)
    upload_ids = {
        entry["upload_id"]
        for entry in server.request_log
        if entry["operation"] == "upload"
    }
    assert len(upload_ids) == 1
    assert None not in upload_ids
    ranges = upload_ranges(server)
    assert len(ranges) == -(-len(data) // MIB)
    expected_start = 0
    for content_range in ranges:
        first, last, total = map(int, re.findall(r"\d+", content_range))
        assert first == expected_start
        assert total == len(data)
        expected_start = last + 1
    assert expected_start == len(data)
    assert server.get_resource(result["public_id"]).chunked is True


def test_upload_large_raw_and_pending_chunk(server, tmp_path):
    data = random.Random(1).randbytes(2 * MIB + 123)
    path = tmp_path / "archive.bin"
    path.write_bytes(data)

    result = cloudinary.uploader.upload_large(str(path), chunk_size=MIB)

    assert result["resource_type"] == "raw"
    assert result["public_id"].endswith(".bin")
    assert result["original_filename"] == "archive"
    assert server.get_resource(result["public_id"], "raw").data == data
    assert len(upload_ranges(server)) == 3

    pending = cloudinary.uploader.upload_large_part(
        ("part.bin", data[:MIB]),
        http_headers={
            "Content-Range": f"bytes 0-{MIB - 1}/{len(data)}",
            "X-Unique-Upload-Id": "pending-upload",
        },
    )
    assert pending["done"] is False
    assert pending["bytes"] == MIB


def test_chunks_contiguous_and_sized(server):
    data = random.Random(2).randbytes(30)

    def send(first, last, chunk, upload_id="gap-upload"):
        return cloudinary.uploader.upload_large_part(
            ("part.bin", chunk),
            http_headers={
                "Content-Range": f"bytes {first}-{last}/30",
                "X-Unique-Upload-Id": upload_id,
            },
        )

    send(0, 9, data[0:10])
    with pytest.raises(cloudinary.exceptions.BadRequest, match="contiguous"):
        send(20, 29, data[20:30])
    with pytest.raises(cloudinary.exceptions.BadRequest, match="does not match"):
        send(10, 19, data[10:15])
    with pytest.raises(
        cloudinary.exceptions.BadRequest, match="first chunk must start"
    ):
        send(10, 19, data[10:20], upload_id="other-upload")
    send(10, 19, data[10:20])
    result = send(20, 29, data[20:30])

    assert server.get_resource(result["public_id"], "raw").data == data


def test_default_minimum_chunk_size():
    data = random.Random(3).randbytes(MIN_CHUNK_SIZE * 2 + 1000)
    with CloudinaryServer() as strict, strict.configure_sdk():
        with pytest.raises(cloudinary.exceptions.BadRequest, match="minimum"):
            cloudinary.uploader.upload_large(io.BytesIO(data), chunk_size=MIB)

        result = cloudinary.uploader.upload_large(
            io.BytesIO(data), chunk_size=MIN_CHUNK_SIZE
        )

        assert strict.get_resource(result["public_id"], "raw").data == data
        assert len(upload_ranges(strict, strict.request_log[-1]["upload_id"])) == 3


def test_storage_dir_spools_to_disk(tmp_path):
    spool = tmp_path / "spool"
    data = random.Random(4).randbytes(3 * MIB)
    with CloudinaryServer(storage_dir=spool, min_chunk_size=0) as spooled:
        with spooled.configure_sdk():
            result = cloudinary.uploader.upload_large(io.BytesIO(data), chunk_size=MIB)
            small = cloudinary.uploader.upload(b"tiny", resource_type="raw")

        stored = spooled.get_resource(result["public_id"], "raw")
        assert stored.content is None
        assert Path(stored.path).is_relative_to(spool)
        assert stored.data == data
        assert spooled.fetch(result["secure_url"]) == (200, data)
        assert spooled.get_resource(small["public_id"], "raw").content == b"tiny"

    assert list(spool.iterdir()) == []


# Destroy and the Admin API.


def test_destroy_removes_resource(server):
    result = cloudinary.uploader.upload(image_bytes(), type="authenticated")

    assert cloudinary.uploader.destroy(result["public_id"])["result"] == "not found"
    response = cloudinary.uploader.destroy(
        result["public_id"], type="authenticated", invalidate=True
    )

    assert response["result"] == "ok"
    assert server.resources == []
    assert server.fetch(result["secure_url"])[0] == 404
    assert server.request_log[-2]["params"]["invalidate"] == "1"


def test_listing_cursor_paging():
    uploaded = {
        cloudinary.uploader.upload(
            b"page %d" % index, resource_type="raw", folder="paging"
        )["public_id"]
        for index in range(7)
    }
    cloudinary.uploader.upload(b"elsewhere", resource_type="raw", folder="other")

    pages = []
    cursor = None
    while True:
        options = {"next_cursor": cursor} if cursor else {}
        page = cloudinary.api.resources(
            resource_type="raw",
            type="upload",
            prefix="paging/",
            max_results=3,
            **options,
        )
        pages.append([item["public_id"] for item in page["resources"]])
        cursor = page.get("next_cursor")
        if cursor is None:
            break

    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [public_id for page in pages for public_id in page]
    assert listed == sorted(uploaded)


def test_listing_order_and_tags():
    first = cloudinary.uploader.upload(image_bytes(), tags="old")["public_id"]
    second = cloudinary.uploader.upload(image_bytes(), tags="new")["public_id"]

    listing = cloudinary.api.resources(tags=True)
    tagged = cloudinary.api.resources_by_tag("old")

    assert [item["public_id"] for item in listing["resources"]] == [second, first]
    assert listing["resources"][0]["tags"] == ["new"]
    assert "next_cursor" not in listing
    assert [item["public_id"] for item in tagged["resources"]] == [first]


def test_resource_details_and_missing():
    result = cloudinary.uploader.upload(image_bytes(), public_id="scans/detail")

    details = cloudinary.api.resource("scans/detail")

    assert details["public_id"] == "scans/detail"
    assert details["bytes"] == result["bytes"]
    assert details["format"] == "png"
    with pytest.raises(cloudinary.exceptions.NotFound, match="Resource not found"):
        cloudinary.api.resource("scans/missing")


def test_delete_resources(server):
    remaining = cloudinary.uploader.upload(image_bytes(), public_id="keep")
    cloudinary.uploader.upload(image_bytes(), public_id="drop")

    response = cloudinary.api.delete_resources(["drop", "never"])

    assert response["deleted"] == {"drop": "deleted", "never": "not_found"}
    assert [item.public_id for item in server.resources] == [remaining["public_id"]]


def test_ping(server):
    assert cloudinary.api.ping()["status"] == "ok"
    assert server.count("ping") == 1


# Credentials and signatures.


def test_wrong_secret_rejected(server):
    with pytest.raises(
        cloudinary.exceptions.AuthorizationRequired, match="Invalid Signature"
    ):
        cloudinary.uploader.upload(image_bytes(), api_secret="wrong")
    with pytest.raises(
        cloudinary.exceptions.AuthorizationRequired, match="Invalid Signature"
    ):
        cloudinary.uploader.destroy("anything", api_secret="wrong")
    with pytest.raises(
        cloudinary.exceptions.AuthorizationRequired, match="api_secret mismatch"
    ):
        cloudinary.api.ping(api_secret="wrong")

    assert server.resources == []


def test_wrong_api_key_rejected(server):
    with pytest.raises(
        cloudinary.exceptions.AuthorizationRequired, match="Unknown API key wrong"
    ):
        cloudinary.uploader.upload(image_bytes(), api_key="wrong")
    with pytest.raises(
        cloudinary.exceptions.AuthorizationRequired, match="Unknown API key wrong"
    ):
        cloudinary.api.resources(api_key="wrong")

    assert server.resources == []


def test_wrong_cloud_name_rejected():
    with pytest.raises(cloudinary.exceptions.AuthorizationRequired, match="cloud"):
        cloudinary.uploader.upload(image_bytes(), cloud_name="other")


def test_stale_timestamp_rejected():
    params = {"timestamp": int(time.time()) - 2 * 3600, "public_id": "old"}

    with pytest.raises(cloudinary.exceptions.BadRequest, match="Stale request"):
        cloudinary.uploader.call_api("destroy", params)


def test_sha256_and_version_1_signatures():
    context = {"note": "a&b"}  # "&" makes version 1 and 2 strings differ

    sha256 = cloudinary.uploader.upload(
        image_bytes(), signature_algorithm="sha256", context=context
    )
    version_1 = cloudinary.uploader.upload(
        image_bytes(), signature_version=1, context=context
    )

    assert sha256["context"] == {"custom": context}
    assert version_1["context"] == {"custom": context}


def test_sha1_server_rejects_sha256():
    with CloudinaryServer(signature_algorithm="sha1") as sha1_only:
        with sha1_only.configure_sdk():
            cloudinary.uploader.upload(image_bytes())
            with pytest.raises(cloudinary.exceptions.AuthorizationRequired):
                cloudinary.uploader.upload(image_bytes(), signature_algorithm="sha256")


# Failure injection.

FAILURES = [
    ("5xx", cloudinary.exceptions.GeneralError, "General Error"),
    ("420", cloudinary.exceptions.RateLimited, "Rate Limit Exceeded"),
    ("401", cloudinary.exceptions.AuthorizationRequired, "Invalid credentials"),
]
CALLS = {
    "upload": lambda: cloudinary.uploader.upload(image_bytes()),
    "destroy": lambda: cloudinary.uploader.destroy("anything"),
    "list": lambda: cloudinary.api.resources(),
    "ping": lambda: cloudinary.api.ping(),
}


@pytest.mark.parametrize("operation", sorted(CALLS))
@pytest.mark.parametrize("mode, error, message", FAILURES)
def test_failure_modes_raise_sdk_errors(server, operation, mode, error, message):
    server.fail_next(1, mode, operation)

    with pytest.raises(error, match=message) as raised:
        CALLS[operation]()

    assert type(raised.value) is error
    CALLS[operation]()  # the failure was used up
    assert server.count(operation) == 2


def test_failure_operation_and_count(server):
    server.fail_next(2, "5xx", "ping")

    cloudinary.uploader.upload(image_bytes())
    for _ in range(2):
        with pytest.raises(cloudinary.exceptions.GeneralError):
            cloudinary.api.ping()
    cloudinary.api.ping()

    assert server.counts == {"upload": 1, "ping": 3}


def test_rate_limit_headers(server):
    server.fail_next(1, "420", "fetch")
    response = requests.get(server.url + "/cloud/image/upload/missing.png")

    assert response.status_code == 420
    assert response.headers["X-FeatureRateLimit-Remaining"] == "0"
    assert response.headers["X-Cld-Error"] == "Rate Limit Exceeded"


def test_upload_timeout_within_limit(server):
    server.fail_next(1, "timeout", "upload", delay=3)
    started = time.monotonic()

    with pytest.raises(cloudinary.exceptions.Error, match="Read timed out") as raised:
        cloudinary.uploader.upload(image_bytes(), timeout=1)

    assert time.monotonic() - started < 2.5
    assert type(raised.value) is cloudinary.exceptions.Error
    assert server.resources == []


def test_upload_ignores_global_timeout(server, sdk):
    sdk.timeout = 0.2
    server.fail_next(1, "timeout", "upload", delay=1.5)
    started = time.monotonic()

    with pytest.raises(cloudinary.exceptions.Error, match="Connection aborted"):
        cloudinary.uploader.upload(image_bytes())

    assert time.monotonic() - started >= 1.4


def test_admin_timeout_retried_by_urllib3(server):
    server.fail_next(1, "timeout", "ping", delay=3)

    assert cloudinary.api.ping(timeout=0.5)["status"] == "ok"
    assert server.count("ping") == 2

    server.fail_next(4, "timeout", "ping", delay=3)
    started = time.monotonic()
    with pytest.raises(
        cloudinary.exceptions.GeneralError, match="Max retries exceeded"
    ):
        cloudinary.api.ping(timeout=0.5)

    assert time.monotonic() - started < 3
    assert server.count("ping") == 6


def test_fetch_timeout(server):
    result = cloudinary.uploader.upload(image_bytes())
    server.fail_next(1, "timeout", "fetch", delay=3)

    with pytest.raises(TimeoutError):
        server.fetch(result["secure_url"], timeout=0.5)

    assert server.fetch(result["secure_url"])[0] == 200


def test_fail_next_argument_checks(server):
    with pytest.raises(ValueError):
        server.fail_next(1, "teapot")
    with pytest.raises(ValueError):
        server.fail_next(1, "5xx", "rename")
    with pytest.raises(ValueError):
        server.fail_next(0, "5xx")


# Delivery.


def test_authenticated_needs_signed_url(server):
    data = image_bytes()
    result = cloudinary.uploader.upload(data, type="authenticated")
    public_id = result["public_id"]

    def url(**options):
        return cloudinary.utils.cloudinary_url(
            public_id, type="authenticated", format="png", secure=True, **options
        )[0]

    assert "/s--" in result["secure_url"]
    assert server.fetch(result["secure_url"]) == (200, data)
    assert server.fetch(url(sign_url=True)) == (200, data)
    signed = server.signed_url(server.get_resource(public_id, type="authenticated"))
    assert server.fetch(signed) == (200, data)
    assert server.fetch(url(sign_url=True, long_url_signature=True)) == (200, data)
    assert server.fetch(url())[0] == 401
    assert server.fetch(url(sign_url=True, api_secret="wrong"))[0] == 401
    tampered = re.sub(r"s--[^/]+--", "s--AAAAAAAA--", url(sign_url=True))
    assert server.fetch(tampered)[0] == 401


def test_private_needs_signed_url(server):
    data = pdf_bytes()
    result = cloudinary.uploader.upload(
        data, type="private", resource_type="raw", filename="report.pdf"
    )

    unsigned = cloudinary.utils.cloudinary_url(
        result["public_id"], type="private", resource_type="raw"
    )[0]
    signed = cloudinary.utils.cloudinary_url(
        result["public_id"], type="private", resource_type="raw", sign_url=True
    )[0]

    assert server.fetch(unsigned)[0] == 401
    assert server.fetch(signed) == (200, data)


def test_delivery_conversion_and_missing(server):
    result = cloudinary.uploader.upload(image_bytes(), public_id="scans/convert")

    status, body = server.fetch(
        cloudinary.CloudinaryImage("scans/convert", format="jpg").build_url()
    )

    assert status == 200
    with Image.open(io.BytesIO(body)) as converted:
        assert converted.format == "JPEG"
        assert converted.size == (result["width"], result["height"])
    assert server.fetch(result["secure_url"].replace("convert", "gone"))[0] == 404


def test_local_delivery_for_http_clients(server):
    data = image_bytes()
    public_id = cloudinary.uploader.upload(data, folder="media")["public_id"]

    with server.configure_sdk(local_delivery=True):
        # django-cloudinary-storage builds URLs like this, without a format.
        url = cloudinary.CloudinaryResource(
            public_id, default_resource_type="image"
        ).url

    assert url.startswith(f"{server.url}/cloud/image/upload/")
    response = requests.get(url, timeout=5)
    head = requests.head(url, timeout=5)
    assert response.content == data
    assert response.headers["Content-Type"] == "image/png"
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(data)
    assert head.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert requests.head(url + "x", timeout=5).status_code == 404


# Test hooks and running the server.


def test_configure_sdk_restores_config(server):
    before = dict(cloudinary.config().__dict__)

    with server.configure_sdk(local_delivery=True, api_key="changed"):
        assert cloudinary.config().api_key == "changed"
        assert cloudinary.config().cname == f"127.0.0.1:{server.port}"

    assert cloudinary.config().__dict__ == before


def test_cloudinary_url_configures_sdk(server, monkeypatch):
    assert server.cloudinary_url == (
        f"cloudinary://key:secret@cloud?upload_prefix=http://127.0.0.1:{server.port}"
    )
    monkeypatch.delenv("CLOUDINARY_CLOUD_NAME", raising=False)
    monkeypatch.setenv("CLOUDINARY_URL", server.cloudinary_url)

    # The `sdk` fixture copies the previous settings back after the test.
    cloudinary.reset_config()

    assert cloudinary.config().upload_prefix == server.url
    assert cloudinary.api.ping()["status"] == "ok"
    assert cloudinary.uploader.upload(image_bytes())["type"] == "upload"


def test_reset_clears_state(server):
    cloudinary.uploader.upload(image_bytes())
    server.fail_next(1, "5xx")

    server.reset()

    assert server.resources == []
    assert server.counts == {}
    assert server.request_log == []
    assert cloudinary.api.ping()["status"] == "ok"


def test_concurrent_uploads(server):
    images = [image_bytes(color=(index, 0, 255 - index)) for index in range(24)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(cloudinary.uploader.upload, images))

    assert len({result["public_id"] for result in results}) == 24
    for result, data in zip(results, images, strict=True):
        assert server.fetch(result["secure_url"]) == (200, data)
    assert server.count("upload") == 24


def test_command_line_server():
    process = subprocess.Popen(
        [sys.executable, "-m", "copilot.testing.cloudinary_server", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert process.stdout.readline().strip() == (
            f"CLOUDINARY_URL=cloudinary://key:secret@cloud?upload_prefix={url}"
        )
        assert cloudinary.api.ping(upload_prefix=url)["status"] == "ok"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stdout.close()
