"""The load client: runs in its own process and prints one JSON result.

Each of `--clients` threads keeps one HTTP connection to 127.0.0.1 and sends
requests one after another until `--requests` are done or `--seconds` have
passed, whichever comes first. The result has the count, the errors, the
requests per second and the latency percentiles in milliseconds.

    python -m bench.load get --port 8000 --token T --path /patients
    python -m bench.load upload --port 8000 --token T --file chest.jpg \
        --patients 3,4,5
    python -m bench.load upload --port 8000 --token T --file chest.jpg \
        --patients 3,4,5 --filename chest.txt --expect 400
    python -m bench.load sdk --cloudinary-url URL --file chest.jpg
    python -m bench.load big-upload --port 8000 --token T --file big.dcm \
        --patients 7

This module does not use Django, so the client costs no more than it must.
"""

import argparse
import http.client
import itertools
import json
import os
import queue
import statistics
import sys
import threading
import time
import uuid

HOST = "127.0.0.1"
BOUNDARY_PREFIX = "bench-boundary-"
SEND_BLOCK = 1024 * 1024


def percentile(values, fraction):
    """Return the value below which `fraction` of the sorted values fall."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def summarize(latencies, errors, elapsed, statuses):
    latencies_ms = [value * 1000 for value in latencies]
    return {
        "requests": len(latencies),
        "errors": errors,
        "statuses": statuses,
        "seconds": round(elapsed, 3),
        "rate": round(len(latencies) / elapsed, 2) if elapsed else None,
        "p50_ms": _round(percentile(latencies_ms, 0.50)),
        "p99_ms": _round(percentile(latencies_ms, 0.99)),
        "mean_ms": _round(statistics.fmean(latencies_ms) if latencies_ms else None),
    }


def _round(value):
    return None if value is None else round(value, 2)


def run_clients(clients, total, seconds, send_one, expected=None):
    """Call send_one(connection_state) from `clients` threads; return a summary.

    send_one returns the HTTP status. A call succeeds with a 2xx status, or with
    the `expected` status when one is given. Stops after `total` calls in all or
    after `seconds`, whichever comes first.
    """
    tickets = itertools.count()
    lock = threading.Lock()
    latencies = []
    statuses = {}
    errors = []
    deadline = time.monotonic() + seconds

    def worker():
        state = {}
        while time.monotonic() < deadline and next(tickets) < total:
            began = time.perf_counter()
            try:
                status = send_one(state)
            except Exception as error:  # noqa: BLE001 - counted, then reported
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
                _close(state)
                continue
            took = time.perf_counter() - began
            with lock:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == expected or (expected is None and 200 <= status < 300):
                    latencies.append(took)
                else:
                    errors.append(f"HTTP {status}")
        _close(state)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    result = summarize(latencies, len(errors), elapsed, statuses)
    result["first_errors"] = errors[:3]
    return result


def _close(state):
    connection = state.pop("connection", None)
    if connection is not None:
        connection.close()


def _connection(state, port):
    if "connection" not in state:
        state["connection"] = http.client.HTTPConnection(HOST, port, timeout=300)
    return state["connection"]


def _exchange(state, port, method, path, body, headers):
    """Send one request on the thread's connection; return the status."""
    connection = _connection(state, port)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    if response.getheader("Connection", "").lower() == "close":
        _close(state)
    return response.status


def multipart(fields, filename, data, boundary):
    """Return a multipart/form-data body with the fields and one file."""
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
            f"\r\n\r\n{value}\r\n".encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream'
        "\r\n\r\n".encode()
    )
    parts.append(data)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts)


def upload_fields(filename):
    fields = {"body_part": "CHEST", "view_position": "PA"}
    if filename.lower().endswith((".dcm", ".dicom")):
        # The test file's PatientID is not the MRN of the bench patients.
        fields["confirm_patient_mismatch"] = "true"
    return fields


def command_get(args):
    headers = {"Authorization": f"Token {args.token}"}

    def send_one(state):
        return _exchange(state, args.port, "GET", args.path, None, headers)

    return run_clients(args.clients, args.requests, args.seconds, send_one)


def command_upload(args):
    with open(args.file, "rb") as handle:
        data = handle.read()
    filename = args.filename or os.path.basename(args.file)
    boundary = BOUNDARY_PREFIX + uuid.uuid4().hex
    body = multipart(upload_fields(filename), filename, data, boundary)
    headers = {
        "Authorization": f"Token {args.token}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    # A DICOM's SOP Instance UID may be stored once per patient, so every
    # upload goes to the next patient of the list.
    patients = queue.SimpleQueue()
    for patient_id in args.patients.split(","):
        patients.put(patient_id)

    def send_one(state):
        patient_id = patients.get_nowait()
        path = f"/patients/{patient_id}/upload/scan"
        return _exchange(state, args.port, "POST", path, body, headers)

    total = min(args.requests, len(args.patients.split(",")))
    result = run_clients(args.clients, total, args.seconds, send_one, args.expect)
    result["bytes"] = len(data)
    return result


def command_sdk(args):
    import cloudinary
    import cloudinary.uploader

    os.environ["CLOUDINARY_URL"] = args.cloudinary_url
    cloudinary.reset_config()
    with open(args.file, "rb") as handle:
        data = handle.read()
    extension = os.path.splitext(args.file)[1].lstrip(".")

    def send_one(state):
        cloudinary.uploader.upload(
            data,
            public_id=f"bench/{uuid.uuid4().hex}.{extension}",
            resource_type=args.resource_type,
        )
        return 200

    result = run_clients(args.clients, args.requests, args.seconds, send_one)
    result["bytes"] = len(data)
    return result


def command_big_upload(args):
    """Stream one multipart upload of a large file from disk, in 1 MB blocks."""
    filename = os.path.basename(args.file)
    boundary = BOUNDARY_PREFIX + uuid.uuid4().hex
    head, tail = multipart(upload_fields(filename), filename, b"\0", boundary).split(
        b"\0"
    )
    size = os.path.getsize(args.file)
    connection = http.client.HTTPConnection(HOST, args.port, timeout=600)
    began = time.perf_counter()
    connection.putrequest("POST", f"/patients/{args.patients}/upload/scan")
    connection.putheader("Authorization", f"Token {args.token}")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(len(head) + size + len(tail)))
    connection.endheaders()
    connection.send(head)
    with open(args.file, "rb") as handle:
        while block := handle.read(SEND_BLOCK):
            connection.send(block)
    connection.send(tail)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return {
        "status": response.status,
        "seconds": round(time.perf_counter() - began, 2),
        "bytes": size,
        "body": body[:300].decode("utf-8", "replace"),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["get", "upload", "sdk", "big-upload"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--token")
    parser.add_argument("--path")
    parser.add_argument("--file")
    parser.add_argument(
        "--filename", help="the file name to send in place of that of --file"
    )
    parser.add_argument(
        "--expect", type=int, help="the HTTP status of a successful request"
    )
    parser.add_argument("--patients", help="comma-separated patient ids")
    parser.add_argument("--cloudinary-url")
    parser.add_argument("--resource-type", default="image")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)

    commands = {
        "get": command_get,
        "upload": command_upload,
        "sdk": command_sdk,
        "big-upload": command_big_upload,
    }
    print(json.dumps(commands[args.command](args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
