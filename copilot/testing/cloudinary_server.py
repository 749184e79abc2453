"""A Cloudinary-compatible HTTP server for tests and benchmarks.

The server implements the parts of the Upload API, the Admin API and the
delivery URLs that the ``cloudinary`` SDK and django-cloudinary-storage use.
The SDK reaches it through the ``upload_prefix`` setting, so nothing in the
SDK is patched:

    with CloudinaryServer() as server:
        with server.configure_sdk():
            result = cloudinary.uploader.upload(path, resource_type="raw")
        status, body = server.fetch(result["secure_url"])

It listens on 127.0.0.1 only. Stored files stay in memory unless
``storage_dir`` is given, in which case chunked uploads and large files are
kept in a private directory under it that ``stop()`` removes.

Run ``python -m copilot.testing.cloudinary_server --port 8765`` to start it
as a separate process; it prints its URL and the matching CLOUDINARY_URL.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import http.client
import io
import json
import logging
import mimetypes
import os
import re
import secrets
import shutil
import signal
import socket
import string
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from PIL import Image
except ImportError:  # pragma: no cover - Pillow is a project dependency.
    Image = None

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
API_VERSION = "v1_1"
RESOURCE_TYPES = ("image", "raw", "video")
DELIVERY_TYPES = ("upload", "private", "authenticated")
SIGNED_DELIVERY_TYPES = ("private", "authenticated")
FAILURE_MODES = ("timeout", "5xx", "420", "401")
OPERATIONS = (
    "upload",
    "destroy",
    "list",
    "resource",
    "delete_resources",
    "ping",
    "fetch",
)
# The service rejects signed requests whose timestamp is older than this.
STALE_AFTER_SECONDS = 3600
# Cloudinary's chunked upload guidelines require every chunk except the last to
# be larger than 5 MB. NOTE: 5 MiB is an estimate of that limit, and the error
# message for smaller chunks is this server's own wording.
MIN_CHUNK_SIZE = 5 * 1024 * 1024
# Parameters that the service leaves out of the request signature.
UNSIGNED_PARAMS = frozenset(
    {"file", "resource_type", "api_key", "cloud_name", "signature"}
)
PIL_FORMATS = {"JPEG": "jpg", "MPO": "jpg", "TIFF": "tiff", "JPEG2000": "jp2"}
SAVE_FORMATS = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "webp": "WEBP",
    "bmp": "BMP",
    "tif": "TIFF",
    "tiff": "TIFF",
}
VIDEO_EXTENSIONS = frozenset(
    {"mp4", "mov", "webm", "avi", "mkv", "m4v", "ogv", "mp3", "wav", "ogg", "m4a"}
)
CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "dcm": "application/dicom",
    "webp": "image/webp",
    "pdf": "application/pdf",
}
_ESCAPE_RE = re.compile(rb"([^a-zA-Z0-9_.\-/:]+)")
_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_VERSION_RE = re.compile(r"^v\d+$")
_FILENAME_UNSAFE_RE = re.compile(r"[?&#\\%<>+]")
_ID_ALPHABET = string.ascii_lowercase + string.digits


class ApiError(Exception):
    """An error response: an HTTP status and the message of the JSON error body."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclasses.dataclass
class StoredResource:
    """One stored asset, as the tests see it.

    `data` returns the stored bytes and `size` their count. `params` contains
    every upload parameter the server received (for a chunked upload, those of
    the first chunk), and `filename` the file name sent in the multipart body.
    """

    public_id: str
    resource_type: str
    type: str
    format: str | None
    version: int
    size: int
    etag: str
    created_at: str
    asset_id: str
    sequence: int
    original_filename: str | None = None
    filename: str | None = None
    width: int | None = None
    height: int | None = None
    pages: int | None = None
    tags: list = dataclasses.field(default_factory=list)
    context: dict = dataclasses.field(default_factory=dict)
    folder: str | None = None
    asset_folder: str | None = None
    display_name: str | None = None
    params: dict = dataclasses.field(default_factory=dict)
    chunked: bool = False
    content: bytes | None = dataclasses.field(default=None, repr=False)
    path: str | None = dataclasses.field(default=None, repr=False)

    @property
    def data(self):
        """Return the stored bytes, reading them from disk when spooled."""
        if self.content is not None:
            return self.content
        with open(self.path, "rb") as handle:
            return handle.read()

    def open(self):
        """Return a binary file object positioned at the start of the bytes."""
        if self.content is not None:
            return io.BytesIO(self.content)
        return open(self.path, "rb")


@dataclasses.dataclass
class _Failure:
    remaining: int
    mode: str
    operation: str | None
    delay: float


@dataclasses.dataclass
class _Reply:
    status: int
    payload: object = None
    body: bytes | None = None
    stream: object = None
    length: int | None = None
    content_type: str = "application/json; charset=utf-8"
    headers: dict = dataclasses.field(default_factory=dict)


class _ChunkedUpload:
    """The parts of one chunked upload received so far, kept by upload id."""

    def __init__(self, upload_id, total, params, filename, resource_type, path):
        self.upload_id = upload_id
        self.total = total
        self.received = 0
        self.params = params
        self.filename = filename
        self.resource_type = resource_type
        self.path = path
        self.lock = threading.Lock()
        self.md5 = hashlib.md5()
        self.buffer = None if path else io.BytesIO()
        self.handle = open(path, "wb") if path else None

    def write(self, data):
        (self.handle or self.buffer).write(data)
        self.md5.update(data)
        self.received += len(data)

    def close(self):
        if self.handle is not None:
            self.handle.close()

    def discard(self):
        self.close()
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)


def smart_escape(value):
    """Percent-encode a public ID the way the SDK does in URLs."""

    def encode(match):
        return "".join(f"%{byte:02X}" for byte in match.group(1)).encode()

    return _ESCAPE_RE.sub(encode, value.encode("utf-8")).decode("ascii")


def string_to_sign(params, encode_ampersand=True):
    """Return the string an Upload API signature covers.

    Every parameter except file, resource_type, api_key, cloud_name and
    signature is included when its value is not empty. List values are joined
    with commas. The "name=value" pairs are sorted and joined with "&".
    Signature version 2 (the SDK default) also encodes "&" in each pair as
    "%26"; version 1 does not.
    """
    pairs = []
    for name, value in params.items():
        if name in UNSIGNED_PARAMS:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        if not value:
            continue
        pair = f"{name}={value}"
        if encode_ampersand:
            pair = pair.replace("&", "%26")
        pairs.append(pair)
    return "&".join(sorted(pairs))


def api_signature(params, secret, algorithm="sha1", encode_ampersand=True):
    """Return the hex signature of Upload API parameters."""
    text = string_to_sign(params, encode_ampersand) + secret
    return hashlib.new(algorithm, text.encode("utf-8")).hexdigest()


def url_signature(to_sign, secret, algorithm="sha1", length=8):
    """Return the "s--...--" delivery URL signature of a path."""
    digest = hashlib.new(algorithm, (to_sign + secret).encode("utf-8")).digest()
    return "s--" + base64.urlsafe_b64encode(digest)[:length].decode("ascii") + "--"


def _truthy(value, default=False):
    if value is None or value == "":
        return default
    return str(value).lower() in ("1", "true")


def _random_id(length=20):
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _timestamp_text(seconds):
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _split_filename(filename):
    base = os.path.basename((filename or "").replace("\\", "/"))
    stem, extension = os.path.splitext(base)
    if not stem and extension:
        stem, extension = extension, ""
    return stem, extension


def _parse_context(text):
    """Parse "key=value|key2=value2" with backslash escapes into a dict."""
    context = {}
    for item in re.split(r"(?<!\\)\|", text or ""):
        parts = re.split(r"(?<!\\)(=)", item, maxsplit=1)
        key, _, value = (parts + ["", ""])[:3]
        if key:
            context[_unescape_context(key)] = _unescape_context(value)
    return context


def _unescape_context(value):
    return value.replace("\\=", "=").replace("\\|", "|")


def _content_type(extension):
    extension = (extension or "").lower().lstrip(".")
    if extension in CONTENT_TYPES:
        return CONTENT_TYPES[extension]
    guessed, _ = mimetypes.guess_type("file." + extension)
    return guessed or "application/octet-stream"


def _inspect(source):
    """Describe image bytes: (format, width, height, pages), or None.

    `source` is the bytes or a file path. Pillow reads most formats, and PDF
    and DICOM files are recognised by their signatures.
    NOTE: the service also accepts PSD, SVG, HEIC and other formats that Pillow
    cannot read, and its acceptance of DICOM as an image is assumed here.
    """
    if Image is not None:
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        try:
            with Image.open(stream) as image:
                name = image.format or ""
                width, height = image.size
                pages = getattr(image, "n_frames", 1)
                image.verify()
            return PIL_FORMATS.get(name, name.lower()), width, height, pages
        except Exception:
            pass
    if isinstance(source, bytes):
        head = source[:1024]
    else:
        with open(source, "rb") as handle:
            head = handle.read(1024)
    if head.startswith(b"%PDF-"):
        pages = None
        if isinstance(source, bytes):
            pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", source)) or None
        return "pdf", None, None, pages
    if head[128:132] == b"DICM":
        width = height = None
        try:
            import pydicom

            dataset = pydicom.dcmread(
                io.BytesIO(source) if isinstance(source, bytes) else source,
                stop_before_pixels=True,
            )
            width, height = int(dataset.Columns), int(dataset.Rows)
        except Exception:
            pass
        return "dcm", width, height, 1
    return None


def _parse_multipart(body, content_type):
    """Parse a multipart/form-data body into (name, value, filename) tuples.

    File parts keep their bytes; other parts are decoded as UTF-8.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ApiError(400, f"Invalid multipart body: no boundary in {content_type!r}")
    delimiter = b"--" + match.group(1).encode("latin-1")
    view = memoryview(body)
    fields = []
    position = body.find(delimiter)
    if position < 0:
        raise ApiError(400, "Invalid multipart body")
    position += len(delimiter)
    while not body.startswith(b"--", position):
        if body.startswith(b"\r\n", position):
            position += 2
        end = body.find(b"\r\n" + delimiter, position)
        header_end = body.find(b"\r\n\r\n", position, end)
        if end < 0 or header_end < 0:
            raise ApiError(400, "Invalid multipart body")
        headers = body[position:header_end].decode("utf-8", "replace")
        disposition = ""
        for line in headers.split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                disposition = line
        attributes = dict(re.findall(r';\s*(\w+)="([^"]*)"', disposition))
        name = _unescape_header_value(attributes.get("name", ""))
        filename = attributes.get("filename")
        if filename is not None:
            filename = _unescape_header_value(filename)
        content = view[header_end + 4 : end]
        if filename is None:
            value = bytes(content).decode("utf-8", "replace")
        else:
            value = bytes(content)
        fields.append((name, value, filename))
        position = end + 2 + len(delimiter)
    return fields


def _parse_query(text):
    """Parse a query string into a dict, with "name[]" values as lists."""
    query = {}
    for name, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        if name.endswith("[]"):
            query.setdefault(name[:-2], []).append(value)
        else:
            query[name] = value
    return query


def _unescape_header_value(value):
    return value.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


def _collect_params(fields):
    """Turn form fields into a dict, with "name[]" fields as lists under "name"."""
    params = {}
    for name, value, _ in fields:
        if name.endswith("[]"):
            params.setdefault(name[:-2], []).append(value)
        else:
            params[name] = value
    return params


class CloudinaryServer:
    """A Cloudinary-compatible server on 127.0.0.1 for the SDK to talk to.

    Arguments:
        api_key, api_secret, cloud_name: the credentials the server accepts.
        port: the port to bind; 0 picks a free one.
        storage_dir: when given, chunked uploads and files larger than
            `spool_threshold` bytes are kept on disk under this directory.
        min_chunk_size: the smallest chunk allowed except the last one; the
            service requires 5 MB. Use 0 to allow any size.
        timeout_delay: how long a request failed with the "timeout" mode is
            held before its connection is dropped, in seconds.
        signature_algorithm: "sha1" or "sha256" to accept only that hash for
            signatures. None accepts either, chosen by the signature length.
    """

    def __init__(
        self,
        api_key="key",
        api_secret="secret",
        cloud_name="cloud",
        *,
        port=0,
        storage_dir=None,
        spool_threshold=1024 * 1024,
        min_chunk_size=MIN_CHUNK_SIZE,
        timeout_delay=5.0,
        signature_algorithm=None,
    ):
        if signature_algorithm not in (None, "sha1", "sha256"):
            raise ValueError(
                f"Invalid signature_algorithm {signature_algorithm!r}: "
                "expected sha1, sha256 or None"
            )
        self.api_key = api_key
        self.api_secret = api_secret
        self.cloud_name = cloud_name
        self.port = port
        self.storage_dir = storage_dir
        self.spool_threshold = spool_threshold
        self.min_chunk_size = min_chunk_size
        self.timeout_delay = timeout_delay
        self.signature_algorithm = signature_algorithm
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd = None
        self._thread = None
        self._spool_dir = None
        self._resources = {}
        self._uploads = {}
        self._failures = []
        self._connections = set()
        self._counts = Counter()
        self._log = []
        self._sequence = 0
        self._last_version = 0

    # Lifecycle.

    def start(self):
        """Bind 127.0.0.1 and serve requests in a background thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        if self.storage_dir is not None:
            os.makedirs(self.storage_dir, exist_ok=True)
            self._spool_dir = tempfile.mkdtemp(
                prefix="cloudinary-", dir=self.storage_dir
            )
        httpd = _HTTPServer((HOST, self.port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"cloudinary-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self):
        """Stop serving, wake held requests, and forget all stored resources.

        Spooled files and the private directory under `storage_dir` are removed.
        """
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join(timeout=10)
        self._httpd = None
        self._thread = None
        self.reset()
        if self._spool_dir:
            shutil.rmtree(self._spool_dir, ignore_errors=True)
            self._spool_dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, traceback):
        self.stop()
        return False

    @property
    def url(self):
        """The base URL, for example http://127.0.0.1:8765."""
        return f"http://{HOST}:{self.port}"

    @property
    def cloudinary_url(self):
        """A CLOUDINARY_URL value that points the SDK at this server."""
        return (
            f"cloudinary://{self.api_key}:{self.api_secret}@{self.cloud_name}"
            f"?upload_prefix={self.url}"
        )

    def sdk_config(self, local_delivery=False):
        """Return keyword arguments for `cloudinary.config()`.

        With `local_delivery`, the SDK also builds delivery URLs that point at
        this server (http://127.0.0.1:PORT/cloud/...) instead of
        res.cloudinary.com, so code that downloads a file URL reaches it.
        """
        config = {
            "cloud_name": self.cloud_name,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "upload_prefix": self.url,
        }
        if local_delivery:
            config.update(
                secure=False,
                cname=f"{HOST}:{self.port}",
                private_cdn=False,
                cdn_subdomain=False,
                secure_distribution=None,
            )
        return config

    @contextlib.contextmanager
    def configure_sdk(self, local_delivery=False, **overrides):
        """Point the global SDK configuration at this server inside the block.

        The previous configuration is restored on exit.
        """
        import cloudinary

        config = cloudinary.config()
        saved = dict(config.__dict__)
        try:
            cloudinary.config(**{**self.sdk_config(local_delivery), **overrides})
            yield cloudinary.config()
        finally:
            current = cloudinary.config()
            current.__dict__.clear()
            current.__dict__.update(saved)

    # Test hooks.

    @property
    def resources(self):
        """The stored resources, oldest first."""
        with self._lock:
            return sorted(self._resources.values(), key=lambda item: item.sequence)

    def get_resource(self, public_id, resource_type="image", type="upload"):
        """Return the StoredResource with this public ID, or None."""
        with self._lock:
            return self._resources.get((resource_type, type, public_id))

    @property
    def request_log(self):
        """One dict per request: operation, method, path, status, params, ..."""
        with self._lock:
            return list(self._log)

    @property
    def counts(self):
        """A Counter of requests per operation, failed ones included."""
        with self._lock:
            return Counter(self._counts)

    def count(self, operation):
        """Return how many requests of one operation the server received."""
        with self._lock:
            return self._counts[operation]

    def mentions(self, text):
        """Return where `text` appears in what clients sent, ignoring case.

        Searches the public IDs, file names, tags, context and every other
        parameter of stored resources, and the paths, queries, parameters and
        file names of all logged requests. Each hit is a short description
        such as "resource scans/abc: params['tags']".
        """
        needle = text.lower()
        hits = []

        def search(where, value):
            if isinstance(value, dict):
                for key, item in value.items():
                    search(f"{where}[{key!r}]", item)
            elif isinstance(value, (list, tuple)):
                for index, item in enumerate(value):
                    search(f"{where}[{index}]", item)
            elif value is not None and needle in str(value).lower():
                hits.append(where)

        for resource in self.resources:
            where = f"resource {resource.public_id}"
            search(f"{where}: public_id", resource.public_id)
            for name in ("filename", "original_filename", "folder", "asset_folder"):
                search(f"{where}: {name}", getattr(resource, name))
            search(f"{where}: display_name", resource.display_name)
            search(f"{where}: tags", resource.tags)
            search(f"{where}: context", resource.context)
            search(f"{where}: params", resource.params)
        for index, entry in enumerate(self.request_log):
            where = f"request {index} ({entry['operation']})"
            for name in ("path", "query", "params", "filename"):
                search(f"{where}: {name}", entry[name])
        return hits

    def fail_next(self, n, mode, operation=None, delay=None):
        """Make the next `n` matching requests fail.

        `mode` is "timeout" (hold the request for `delay` seconds, default
        `timeout_delay`, then close the connection without a response), "5xx"
        (500 with a JSON error), "420" (rate limited) or "401". `operation`
        limits the failure to one of OPERATIONS; None matches any request.
        """
        if mode not in FAILURE_MODES:
            raise ValueError(f"Invalid mode {mode!r}: expected one of {FAILURE_MODES}")
        if operation is not None and operation not in OPERATIONS:
            raise ValueError(
                f"Invalid operation {operation!r}: expected one of {OPERATIONS}"
            )
        if n < 1:
            raise ValueError(f"Invalid count {n}: expected at least 1")
        delay = self.timeout_delay if delay is None else delay
        with self._lock:
            self._failures.append(_Failure(n, mode, operation, delay))

    def reset(self):
        """Forget resources, partial uploads, planned failures, counts and logs."""
        with self._lock:
            resources = list(self._resources.values())
            uploads = list(self._uploads.values())
            self._resources.clear()
            self._uploads.clear()
            self._failures.clear()
            self._counts.clear()
            self._log.clear()
        for resource in resources:
            self._remove_file(resource.path)
        for upload in uploads:
            upload.discard()

    def fetch(self, delivery_url, timeout=10):
        """Request a delivery URL's path from this server and return (status, body).

        `delivery_url` is a URL as the SDK builds it, for example
        https://res.cloudinary.com/cloud/image/upload/v1/a.png. Only its path
        and query are used, so the request goes to this server.
        """
        parts = urllib.parse.urlsplit(delivery_url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            connection.request("GET", target)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def signed_url(self, resource, algorithm=None):
        """Return the signed https delivery URL of a StoredResource."""
        return self._delivery_url(resource, "https", signed=True, algorithm=algorithm)

    # Request handling.

    def _record(self, entry):
        with self._lock:
            self._log.append(entry)

    def _count(self, operation):
        with self._lock:
            self._counts[operation] += 1

    def _take_failure(self, operation):
        with self._lock:
            for failure in self._failures:
                if failure.operation in (None, operation):
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                    return failure
        return None

    def _next_version(self):
        with self._lock:
            self._last_version = max(int(time.time()), self._last_version + 1)
            self._sequence += 1
            return self._last_version, self._sequence

    def _new_spool_path(self):
        return os.path.join(self._spool_dir, secrets.token_hex(16))

    @staticmethod
    def _remove_file(path):
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def _check_cloud(self, cloud_name):
        if cloud_name != self.cloud_name:
            raise ApiError(401, f"Invalid cloud_name {cloud_name}")

    def _check_signed(self, params):
        """Check the api_key, the signature and the timestamp of a request."""
        api_key = params.get("api_key")
        if not api_key:
            raise ApiError(401, "Must supply api_key")
        if api_key != self.api_key:
            raise ApiError(401, f"Unknown API key {api_key}")

        signature = params.get("signature")
        if not signature:
            raise ApiError(401, "Missing required parameter - signature")
        algorithm = {40: "sha1", 64: "sha256"}.get(len(signature))
        if self.signature_algorithm and algorithm != self.signature_algorithm:
            algorithm = None
        expected = string_to_sign(params)
        valid = algorithm is not None and any(
            hmac.compare_digest(
                signature.lower(),
                api_signature(params, self.api_secret, algorithm, encoded),
            )
            for encoded in (True, False)
        )
        if not valid:
            raise ApiError(
                401, f"Invalid Signature {signature}. String to sign - '{expected}'."
            )

        timestamp = params.get("timestamp")
        if not timestamp:
            raise ApiError(400, "Missing required parameter - timestamp")
        try:
            seconds = int(timestamp)
        except ValueError:
            raise ApiError(400, f"Invalid timestamp {timestamp}") from None
        if time.time() - seconds > STALE_AFTER_SECONDS:
            reported = datetime.fromtimestamp(seconds, tz=UTC)
            raise ApiError(
                400,
                "Stale request - reported time is "
                f"{reported:%Y-%m-%d %H:%M:%S} +0000 which is more than 1 hour ago",
            )

    def _check_basic_auth(self, header):
        """Check the Admin API credentials sent with HTTP basic auth."""
        if not header or not header.lower().startswith("basic "):
            raise ApiError(401, "Must supply api_key")
        try:
            decoded = base64.b64decode(header.split(" ", 1)[1]).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, "Invalid credentials") from None
        api_key, _, api_secret = decoded.partition(":")
        if api_key != self.api_key:
            raise ApiError(401, f"Unknown API key {api_key}")
        if not hmac.compare_digest(api_secret, self.api_secret):
            raise ApiError(401, "api_secret mismatch")

    # Upload API.

    def _upload(self, resource_type, fields, headers):
        params = _collect_params(fields)
        file_value = filename = None
        for name, value, part_filename in fields:
            if name == "file":
                file_value, filename = value, part_filename
        params.pop("file", None)
        self._check_signed(params)

        delivery_type = params.get("type") or "upload"
        if delivery_type not in DELIVERY_TYPES:
            raise ApiError(400, f"Invalid type {delivery_type}")
        if file_value is None:
            raise ApiError(400, "Missing required parameter - file")

        data = self._file_bytes(file_value)
        content_range = headers.get("Content-Range")
        if content_range:
            upload_id = headers.get("X-Unique-Upload-Id")
            return self._upload_chunk(
                resource_type, params, filename, data, content_range, upload_id
            )

        if not data:
            raise ApiError(400, "Empty file")
        etag = hashlib.md5(data).hexdigest()
        size = len(data)
        path = None
        if self._spool_dir and size > self.spool_threshold:
            path = self._new_spool_path()
            with open(path, "wb") as handle:
                handle.write(data)
            data = None
        return self._create(
            resource_type, params, filename, data, path, size, etag, False
        )

    @staticmethod
    def _file_bytes(value):
        if isinstance(value, bytes):
            return value
        match = re.match(r"^data:[^;,]*(;[\w-]+=[\w-]+)*;base64,(.*)$", value, re.S)
        if match:
            try:
                return base64.b64decode(match.group(2))
            except binascii.Error:
                raise ApiError(400, "Invalid data URI") from None
        if re.match(r"^(ftp|https?|s3|gs):", value):
            raise ApiError(
                400,
                "Remote file URLs are not supported by this server: "
                "upload the file bytes instead",
            )
        return value.encode("utf-8")

    def _upload_chunk(
        self, resource_type, params, filename, data, content_range, upload_id
    ):
        match = _RANGE_RE.match(content_range.strip())
        if not match:
            raise ApiError(400, f"Invalid Content-Range header {content_range}")
        if not upload_id:
            raise ApiError(400, "Missing X-Unique-Upload-Id header")
        first, last, total = (int(group) for group in match.groups())
        if last < first or last >= total or last - first + 1 != len(data):
            raise ApiError(
                400,
                f"Content-Range {content_range} does not match the chunk size "
                f"{len(data)}",
            )
        is_last = last + 1 == total
        if not is_last and len(data) < self.min_chunk_size:
            raise ApiError(
                400,
                f"Chunk of {len(data)} bytes is below the minimum chunk size of "
                f"{self.min_chunk_size} bytes: only the last chunk may be smaller, "
                "so increase chunk_size",
            )
        with self._lock:
            upload = self._uploads.get(upload_id)
            if upload is None:
                if first != 0:
                    raise ApiError(
                        400,
                        f"Unknown upload {upload_id}: its first chunk must start "
                        f"at byte 0, not {first}",
                    )
                path = self._new_spool_path() if self._spool_dir else None
                upload = _ChunkedUpload(
                    upload_id, total, params, filename, resource_type, path
                )
                self._uploads[upload_id] = upload
        with upload.lock:
            if upload.total != total or upload.resource_type != resource_type:
                raise ApiError(400, f"Chunk does not belong to upload {upload_id}")
            if first != upload.received:
                raise ApiError(
                    400,
                    f"Chunks must be contiguous: expected the range to start at "
                    f"{upload.received}, got {first}",
                )
            upload.write(data)
            if not is_last:
                # NOTE: the service's response to a chunk before the last is not
                # documented. The SDK copies its "public_id" (or None) to the
                # options of the next chunk.
                return {"done": False, "bytes": upload.received, "upload_id": upload_id}
            with self._lock:
                self._uploads.pop(upload_id, None)
            upload.close()
            content = None if upload.path else upload.buffer.getvalue()
            try:
                return self._create(
                    upload.resource_type,
                    upload.params,
                    upload.filename,
                    content,
                    upload.path,
                    upload.received,
                    upload.md5.hexdigest(),
                    True,
                )
            except ApiError:
                upload.discard()
                raise

    def _create(self, resource_type, params, filename, data, path, size, etag, chunked):
        """Store an uploaded file and return the upload response."""
        stem, extension = _split_filename(filename)
        extension_name = extension.lower().lstrip(".")
        try:
            info = _inspect(data if data is not None else path)
        except OSError:
            info = None

        if resource_type == "auto":
            if info:
                resource_type = "image"
            elif extension_name in VIDEO_EXTENSIONS:
                resource_type = "video"
            else:
                resource_type = "raw"
        if resource_type == "image" and info is None:
            self._remove_file(path)
            raise ApiError(400, "Invalid image file")

        fmt = width = height = pages = None
        if resource_type == "image":
            fmt, width, height, pages = info
        elif resource_type == "video":
            fmt = extension_name or None

        delivery_type = params.get("type") or "upload"
        public_id, folder, asset_folder = self._public_id(
            params, stem, extension, resource_type
        )
        original = None
        if not _truthy(params.get("discard_original_filename")):
            override = params.get("filename_override")
            original = _split_filename(override)[0] if override else stem or "file"

        key = (resource_type, delivery_type, public_id)
        with self._lock:
            existing = self._resources.get(key)
            if existing is not None and not _truthy(params.get("overwrite"), True):
                self._remove_file(path)
                payload = self._upload_payload(existing)
                payload["existing"] = True
                return payload
            version, sequence = self._next_version()
            resource = StoredResource(
                public_id=public_id,
                resource_type=resource_type,
                type=delivery_type,
                format=fmt,
                version=version,
                size=size,
                etag=etag,
                created_at=_timestamp_text(time.time()),
                asset_id=secrets.token_hex(16),
                sequence=sequence,
                original_filename=original,
                filename=filename,
                width=width,
                height=height,
                pages=pages,
                tags=[tag for tag in (params.get("tags") or "").split(",") if tag],
                context=_parse_context(params.get("context")),
                folder=folder,
                asset_folder=asset_folder,
                display_name=params.get("display_name"),
                params=dict(params),
                chunked=chunked,
                content=data,
                path=path,
            )
            self._resources[key] = resource

        if existing is not None:
            self._remove_file(existing.path)
        payload = self._upload_payload(resource)
        if existing is not None:
            payload["overwritten"] = True
        return payload

    def _public_id(self, params, stem, extension, resource_type):
        """Return (public_id, folder, asset_folder) as the service names files."""
        public_id = params.get("public_id")
        if not public_id:
            if _truthy(params.get("use_filename")) and stem:
                public_id = _FILENAME_UNSAFE_RE.sub("_", stem)
                if _truthy(params.get("unique_filename"), True):
                    public_id += "_" + _random_id(6)
            else:
                public_id = _random_id()
            if resource_type == "raw" and extension:
                public_id += extension
        folder = (params.get("folder") or "").strip("/") or None
        asset_folder = (params.get("asset_folder") or "").strip("/") or folder
        if folder:
            public_id = f"{folder}/{public_id}"
        elif asset_folder and _truthy(
            params.get("use_asset_folder_as_public_id_prefix")
        ):
            public_id = f"{asset_folder}/{public_id}"
        if params.get("public_id_prefix"):
            public_id = params["public_id_prefix"].strip("/") + "/" + public_id
        return public_id, folder, asset_folder

    def _delivery_url(self, resource, scheme, signed=None, algorithm=None):
        if signed is None:
            signed = resource.type in SIGNED_DELIVERY_TYPES
        source = smart_escape(resource.public_id)
        if resource.format and resource.resource_type != "raw":
            source += f".{resource.format}"
        segments = [self.cloud_name, resource.resource_type, resource.type]
        if signed:
            algorithm = algorithm or self.signature_algorithm or "sha1"
            segments.append(url_signature(source, self.api_secret, algorithm))
        segments += [f"v{resource.version}", source]
        return f"{scheme}://res.cloudinary.com/" + "/".join(segments)

    def _upload_payload(self, resource):
        payload = {
            "asset_id": resource.asset_id,
            "public_id": resource.public_id,
            "version": resource.version,
            "version_id": hashlib.md5(
                f"{resource.asset_id}{resource.version}".encode()
            ).hexdigest(),
            "signature": api_signature(
                {"public_id": resource.public_id, "version": str(resource.version)},
                self.api_secret,
                self.signature_algorithm or "sha1",
                encode_ampersand=False,
            ),
        }

        if resource.width is not None:
            payload["width"] = resource.width
            payload["height"] = resource.height
        if resource.format:
            payload["format"] = resource.format
        if resource.pages and resource.pages > 1:
            payload["pages"] = resource.pages

        payload.update(
            resource_type=resource.resource_type,
            created_at=resource.created_at,
            tags=list(resource.tags),
            bytes=resource.size,
            type=resource.type,
            etag=resource.etag,
            placeholder=False,
            url=self._delivery_url(resource, "http"),
            secure_url=self._delivery_url(resource, "https"),
        )

        if resource.context:
            payload["context"] = {"custom": dict(resource.context)}
        if resource.folder:
            payload["folder"] = resource.folder
        if resource.asset_folder:
            payload["asset_folder"] = resource.asset_folder
        if resource.display_name:
            payload["display_name"] = resource.display_name
        if resource.original_filename is not None:
            payload["original_filename"] = resource.original_filename
        payload["api_key"] = self.api_key
        return payload

    def _destroy(self, resource_type, fields):
        params = _collect_params(fields)
        self._check_signed(params)
        public_id = params.get("public_id")
        if not public_id:
            raise ApiError(400, "Missing required parameter - public_id")
        delivery_type = params.get("type") or "upload"
        with self._lock:
            resource = self._resources.pop(
                (resource_type, delivery_type, public_id), None
            )
        if resource is None:
            return {"result": "not found"}
        self._remove_file(resource.path)
        return {"result": "ok"}

    # Admin API.

    def _list(self, resource_type, delivery_type, query, tag=None):
        try:
            max_results = int(query.get("max_results") or 10)
        except ValueError:
            raise ApiError(400, "Invalid max_results") from None
        if not 1 <= max_results <= 500:
            raise ApiError(400, "max_results must be between 1 and 500")
        prefix = query.get("prefix") or ""
        with self._lock:
            items = [
                item
                for item in self._resources.values()
                if item.resource_type == resource_type
                and delivery_type in (None, item.type)
                and item.public_id.startswith(prefix)
                and (tag is None or tag in item.tags)
            ]
        # With a prefix the service sorts by public ID. Without one it sorts by
        # creation, newest first unless direction is "asc" or "1".
        if prefix:
            descending = False

            def sort_key(item):
                return [item.public_id, item.type]

        else:
            descending = (query.get("direction") or "desc") in ("desc", "-1")

            def sort_key(item):
                return item.sequence

        items.sort(key=sort_key, reverse=descending)
        cursor = query.get("next_cursor")
        if cursor:
            after = self._decode_cursor(cursor)
            if descending:
                items = [item for item in items if sort_key(item) < after]
            else:
                items = [item for item in items if sort_key(item) > after]
        page = items[:max_results]
        with_tags = _truthy(query.get("tags"))
        with_context = _truthy(query.get("context"))
        payload = {
            "resources": [
                self._listing_payload(item, with_tags, with_context) for item in page
            ]
        }
        if len(items) > max_results:
            payload["next_cursor"] = self._encode_cursor(sort_key(page[-1]))
        return payload

    @staticmethod
    def _encode_cursor(key):
        text = json.dumps(key).encode("utf-8")
        return base64.urlsafe_b64encode(text).decode("ascii").rstrip("=")

    @staticmethod
    def _decode_cursor(cursor):
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            key = json.loads(base64.urlsafe_b64decode(padded))
        except (ValueError, binascii.Error):
            raise ApiError(400, f"Invalid next_cursor {cursor}") from None
        if not isinstance(key, (int, list)):
            raise ApiError(400, f"Invalid next_cursor {cursor}")
        return key

    def _listing_payload(self, resource, with_tags=False, with_context=False):
        payload = {
            "asset_id": resource.asset_id,
            "public_id": resource.public_id,
        }
        if resource.format:
            payload["format"] = resource.format
        payload.update(
            version=resource.version,
            resource_type=resource.resource_type,
            type=resource.type,
            created_at=resource.created_at,
            bytes=resource.size,
        )
        if resource.width is not None:
            payload["width"] = resource.width
            payload["height"] = resource.height
        if resource.folder:
            payload["folder"] = resource.folder
        payload["asset_folder"] = resource.asset_folder or ""
        payload["url"] = self._delivery_url(resource, "http")
        payload["secure_url"] = self._delivery_url(resource, "https")
        if with_tags:
            payload["tags"] = list(resource.tags)
        if with_context and resource.context:
            payload["context"] = {"custom": dict(resource.context)}
        return payload

    def _details(self, resource_type, delivery_type, public_id):
        resource = self.get_resource(public_id, resource_type, delivery_type)
        if resource is None:
            raise ApiError(404, f"Resource not found - {public_id}")
        payload = self._upload_payload(resource)
        payload.pop("api_key", None)
        payload["derived"] = []
        return payload

    def _delete_resources(self, resource_type, delivery_type, params):
        public_ids = params.get("public_ids") or []
        if isinstance(public_ids, str):
            public_ids = [public_ids]
        prefix = params.get("prefix")
        delete_all = _truthy(params.get("all"))
        if not public_ids and not prefix and not delete_all:
            raise ApiError(400, "Must specify public_ids, prefix or all")
        deleted = {}
        removed = []
        with self._lock:
            if prefix or delete_all:
                public_ids = [
                    item.public_id
                    for item in self._resources.values()
                    if item.resource_type == resource_type
                    and item.type == delivery_type
                    and item.public_id.startswith(prefix or "")
                ]
            for public_id in public_ids:
                key = (resource_type, delivery_type, public_id)
                resource = self._resources.pop(key, None)
                deleted[public_id] = "deleted" if resource else "not_found"
                if resource:
                    removed.append(resource)
        for resource in removed:
            self._remove_file(resource.path)
        counts = {
            public_id: {"original": int(state == "deleted"), "derived": 0}
            for public_id, state in deleted.items()
        }
        return {"deleted": deleted, "deleted_counts": counts, "partial": False}

    # Delivery.

    def _deliver(self, segments, method):
        """Serve GET or HEAD /{cloud}/{resource_type}/{type}/... paths."""
        if len(segments) < 4 or segments[0] != self.cloud_name:
            raise ApiError(404, "Resource not found")
        resource_type, delivery_type, rest = segments[1], segments[2], segments[3:]
        if resource_type not in RESOURCE_TYPES or delivery_type not in DELIVERY_TYPES:
            raise ApiError(404, "Resource not found")
        signature = None
        if rest and rest[0].startswith("s--") and rest[0].endswith("--"):
            signature, rest = rest[0], rest[1:]
        version_index = next(
            (i for i, part in enumerate(rest) if _VERSION_RE.match(part)), None
        )
        if signature is not None and not self._url_signature_valid(
            signature, rest, version_index
        ):
            raise ApiError(401, "Invalid signature")
        if signature is None and delivery_type in SIGNED_DELIVERY_TYPES:
            raise ApiError(401, "Signature required")
        if version_index is not None:
            candidates = [rest[version_index + 1 :]]
        else:
            candidates = [rest[i:] for i in range(len(rest))]
        for candidate in candidates:
            found = self._find_delivered(resource_type, delivery_type, candidate)
            if found:
                return self._delivery_reply(*found, method)
        raise ApiError(404, "Resource not found")

    def _url_signature_valid(self, signature, rest, version_index):
        parts = [part for i, part in enumerate(rest) if i != version_index]
        texts = {"/".join(parts), "/".join(rest)}
        texts |= {smart_escape(urllib.parse.unquote(text)) for text in list(texts)}
        length = len(signature) - 5
        if length == 32:
            algorithms = ["sha256"]
        elif length == 8:
            algorithms = [self.signature_algorithm] if self.signature_algorithm else []
            algorithms = algorithms or ["sha1", "sha256"]
        else:
            return False
        return any(
            hmac.compare_digest(
                signature, url_signature(text, self.api_secret, algorithm, length)
            )
            for text in texts
            for algorithm in algorithms
        )

    def _find_delivered(self, resource_type, delivery_type, parts):
        if not parts:
            return None
        source = urllib.parse.unquote("/".join(parts))
        resource = self.get_resource(source, resource_type, delivery_type)
        if resource is not None:
            return resource, None
        stem, dot, extension = source.rpartition(".")
        if dot and stem and resource_type != "raw":
            resource = self.get_resource(stem, resource_type, delivery_type)
            if resource is not None:
                return resource, extension.lower()
        return None

    def _delivery_reply(self, resource, extension, method):
        stored_format = resource.format
        if resource.resource_type == "raw":
            content_type = _content_type(os.path.splitext(resource.public_id)[1])
        else:
            content_type = _content_type(extension or stored_format)
        headers = {
            "ETag": f'"{resource.etag}"',
            "Last-Modified": time.strftime(
                "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(resource.version)
            ),
            "Cache-Control": "public, max-age=2592000",
        }
        same_format = extension in (None, stored_format) or (
            {extension, stored_format} <= {"jpg", "jpeg"}
        )
        if not same_format:
            converted = self._convert(resource, extension)
            if converted is None:
                raise ApiError(
                    404, f"Cannot deliver {resource.public_id} as {extension}"
                )
            return _Reply(
                200, body=converted, content_type=content_type, headers=headers
            )
        if method == "HEAD" or resource.content is not None:
            body = b"" if method == "HEAD" else resource.content
            return _Reply(
                200,
                body=body,
                length=resource.size,
                content_type=content_type,
                headers=headers,
            )
        return _Reply(
            200,
            stream=resource.open(),
            length=resource.size,
            content_type=content_type,
            headers=headers,
        )

    @staticmethod
    def _convert(resource, extension):
        save_format = SAVE_FORMATS.get(extension)
        if Image is None or save_format is None:
            return None
        try:
            with resource.open() as handle, Image.open(handle) as image:
                if save_format == "JPEG" and image.mode not in ("RGB", "L"):
                    image = image.convert("RGB")
                output = io.BytesIO()
                image.save(output, save_format)
                return output.getvalue()
        except Exception:
            return None

    # Routing.

    def _route(self, method, path):
        """Return (operation, callable taking the request) for a method and path."""
        segments = [segment for segment in path.split("/") if segment]
        if segments[:1] == [API_VERSION] and len(segments) >= 3:
            cloud_name, rest = urllib.parse.unquote(segments[1]), segments[2:]
            return self._route_api(method, cloud_name, rest)
        if method in ("GET", "HEAD"):
            return "fetch", lambda request: self._deliver(segments, method)
        return "unknown", None

    def _route_api(self, method, cloud_name, rest):
        def admin(handler):
            def run(request):
                self._check_cloud(cloud_name)
                self._check_basic_auth(request.headers.get("Authorization"))
                return handler(request)

            return run

        def upload_api(handler):
            def run(request):
                self._check_cloud(cloud_name)
                return handler(request)

            return run

        unquoted = [urllib.parse.unquote(part) for part in rest]
        if method == "POST" and len(rest) == 2 and rest[1] == "upload":
            resource_type = rest[0]
            if resource_type in RESOURCE_TYPES + ("auto",):
                return "upload", upload_api(
                    lambda request: self._upload(
                        resource_type, request.fields, request.headers
                    )
                )
        if method == "POST" and len(rest) == 2 and rest[1] == "destroy":
            resource_type = rest[0]
            if resource_type in RESOURCE_TYPES:
                return "destroy", upload_api(
                    lambda request: self._destroy(resource_type, request.fields)
                )
        if method == "GET" and rest == ["ping"]:
            return "ping", admin(lambda request: {"status": "ok"})
        if rest[0] != "resources" or len(rest) < 2 or rest[1] not in RESOURCE_TYPES:
            return "unknown", None
        resource_type = rest[1]
        if method == "GET" and len(rest) == 4 and rest[2] == "tags":
            tag = unquoted[3]
            return "list", admin(
                lambda request: self._list(resource_type, None, request.query, tag)
            )
        if method == "GET" and len(rest) in (2, 3):
            delivery_type = rest[2] if len(rest) == 3 else None
            return "list", admin(
                lambda request: self._list(resource_type, delivery_type, request.query)
            )
        if method == "GET" and len(rest) > 3:
            public_id = "/".join(unquoted[3:])
            return "resource", admin(
                lambda request: self._details(resource_type, rest[2], public_id)
            )
        if method == "DELETE" and len(rest) == 3:
            return "delete_resources", admin(
                lambda request: self._delete_resources(
                    resource_type, rest[2], request.form_params()
                )
            )
        return "unknown", None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when more clients
    # connect at once, and each dropped one waits a second before it retries.
    request_queue_size = 128
    owner = None


class _Request:
    """The parts of an HTTP request the handlers need."""

    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self._fields = None

    @property
    def fields(self):
        """Form fields as (name, value, filename) tuples."""
        if self._fields is None:
            content_type = self.headers.get("Content-Type") or ""
            if content_type.startswith("multipart/form-data"):
                self._fields = _parse_multipart(self.body, content_type)
            elif content_type.startswith("application/json"):
                self._fields = [
                    (name, value, None) for name, value in self._json().items()
                ]
            else:
                pairs = urllib.parse.parse_qsl(
                    self.body.decode("utf-8"), keep_blank_values=True
                )
                self._fields = [(name, value, None) for name, value in pairs]
        return self._fields

    def _json(self):
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            raise ApiError(400, "Invalid JSON body") from None
        if not isinstance(value, dict):
            raise ApiError(400, "Invalid JSON body")
        return value

    def form_params(self):
        """Parameters from the query string and the body, JSON or form encoded."""
        params = dict(self.query)
        content_type = self.headers.get("Content-Type") or ""
        if content_type.startswith("application/json"):
            params.update(self._json())
        elif self.body:
            params.update(_collect_params(self.fields))
        for name in list(params):
            if name.endswith("[]"):
                params[name[:-2]] = params.pop(name)
        return params


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CloudinaryTestServer/1.0"
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 120

    def setup(self):
        super().setup()
        # Headers and body are written separately, so without this Nagle's
        # algorithm and delayed acknowledgements add about 40 ms (measured).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.owner._lock:
            self.server.owner._connections.add(self.connection)

    def finish(self):
        with self.server.owner._lock:
            self.server.owner._connections.discard(self.connection)
        super().finish()

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self):
        owner = self.server.owner
        split = urllib.parse.urlsplit(self.path)
        query = _parse_query(split.query)
        body = self._read_body()
        request = _Request(self.command, split.path, query, self.headers, body)
        operation, handler = owner._route(self.command, split.path)
        owner._count(operation)
        entry = {
            "operation": operation,
            "method": self.command,
            "path": split.path,
            "query": query,
            "status": None,
            "params": None,
            "filename": None,
            "content_range": self.headers.get("Content-Range"),
            "upload_id": self.headers.get("X-Unique-Upload-Id"),
        }
        owner._record(entry)

        try:
            failure = owner._take_failure(operation)
            if failure is not None:
                entry["failure"] = failure.mode
                if failure.mode == "timeout":
                    logger.info(
                        "holding %s %s for %.1f s, then dropping the connection",
                        self.command,
                        split.path,
                        failure.delay,
                    )
                    owner._stopping.wait(failure.delay)
                    self.close_connection = True
                    return
                raise self._failure_error(failure.mode)
            if handler is None:
                raise ApiError(404, f"Not found: {self.command} {split.path}")

            if operation in ("upload", "destroy"):
                fields = request.fields
                entry["params"] = {
                    name: value
                    for name, value in _collect_params(fields).items()
                    if name != "file"
                }
                entry["filename"] = next(
                    (filename for name, _, filename in fields if name == "file"), None
                )
            result = handler(request)
            reply = result if isinstance(result, _Reply) else _Reply(200, result)
        except ApiError as error:
            logger.info(
                "%s %s failed with %s: %s",
                self.command,
                split.path,
                error.status,
                error.message,
            )
            reply = self._error_reply(error, operation)
        except Exception as error:
            logger.exception("%s %s failed", self.command, split.path)
            reply = _Reply(500, {"error": {"message": f"General Error: {error}"}})

        entry["status"] = reply.status
        self._send(reply, operation)

    @staticmethod
    def _error_reply(error, operation):
        if operation != "fetch":
            return _Reply(
                error.status,
                {"error": {"message": error.message}},
                headers=error.headers,
            )
        # The CDN reports delivery errors in a header, with an empty body.
        message = error.message.encode("ascii", "replace").decode("ascii")
        return _Reply(
            error.status,
            body=b"",
            content_type="text/plain",
            headers={"X-Cld-Error": message, **error.headers},
        )

    @staticmethod
    def _failure_error(mode):
        if mode == "5xx":
            return ApiError(500, "General Error")
        if mode == "420":
            reset = time.strftime(
                "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3600)
            )
            return ApiError(
                420,
                "Rate Limit Exceeded",
                {
                    "X-FeatureRateLimit-Limit": "500",
                    "X-FeatureRateLimit-Remaining": "0",
                    "X-FeatureRateLimit-Reset": reset,
                    "Retry-After": "3600",
                },
            )
        return ApiError(401, "Invalid credentials")

    def _send(self, reply, operation):
        body = reply.body
        if reply.payload is not None:
            body = json.dumps(reply.payload).encode("utf-8")
        length = reply.length
        if length is None:
            length = len(body or b"")
        reason = "Enhance Your Calm" if reply.status == 420 else None
        self.send_response(reply.status, reason)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Request-Id", secrets.token_hex(8))
        if operation not in ("fetch", "upload", "destroy", "unknown"):
            self.send_header("X-FeatureRateLimit-Limit", "500")
            self.send_header("X-FeatureRateLimit-Remaining", "499")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            if reply.stream is not None:
                reply.stream.close()
            return
        if reply.stream is not None:
            with reply.stream:
                shutil.copyfileobj(reply.stream, self.wfile, 1024 * 1024)
        elif body:
            self.wfile.write(body)


def main(argv=None):
    """Run the server in the foreground until interrupted."""
    parser = argparse.ArgumentParser(
        description="Run a Cloudinary-compatible test server on 127.0.0.1."
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default="key")
    parser.add_argument("--api-secret", default="secret")
    parser.add_argument("--cloud-name", default="cloud")
    parser.add_argument(
        "--storage-dir", help="keep chunked uploads and large files on disk here"
    )
    parser.add_argument(
        "--min-chunk-size",
        type=int,
        default=MIN_CHUNK_SIZE,
        help="smallest chunk allowed except the last; 0 allows any size",
    )
    parser.add_argument(
        "--timeout-delay",
        type=float,
        default=5.0,
        help="seconds to hold a request failed with the timeout mode",
    )
    args = parser.parse_args(argv)

    server = CloudinaryServer(
        api_key=args.api_key,
        api_secret=args.api_secret,
        cloud_name=args.cloud_name,
        port=args.port,
        storage_dir=args.storage_dir,
        min_chunk_size=args.min_chunk_size,
        timeout_delay=args.timeout_delay,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())

    server.start()
    print(server.url, flush=True)
    print(f"CLOUDINARY_URL={server.cloudinary_url}", flush=True)
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
