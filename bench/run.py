"""The benchmark suite: `make bench` runs it and rewrites docs/benchmarks.md.

It seeds a PostgreSQL database of its own, serves the app with gunicorn as in
production (DEBUG off, a secret key, plain HTTP on 127.0.0.1), drives it from
a separate load process and checks the results against the budgets:

- reads: GET /patients and GET /patients/{id} at 2,000 and 20,000 patients;
- uploads: a chest JPEG and RG1_UNCR.dcm through the API and straight to the
  same Cloudinary-compatible server with the cloudinary SDK;
- memory: the RSS of the gunicorn worker that stores a 500 MB DICOM upload;
- DICOM previews: milliseconds per megabyte of make_previews.

    python -m bench.run [--quick] [--database-url URL]

--quick runs each measurement once and briefly, to check the suite itself, and
--only runs some parts (for example --only reads,memory); both leave
docs/benchmarks.md alone, since their figures are not a full run.
"""

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time

import psutil

from bench import inputs, report
from bench.servers import (
    PYTHON,
    ROOT,
    CpuMeter,
    RssSampler,
    cloudinary_server,
    database_backends,
    ensure_postgres,
    ensure_redis,
    gunicorn,
    recreate_database,
)

RESULTS = ROOT / "bench" / "results"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/copilot_bench"
# Rate limits are counted in Redis, as the README advises for several workers.
REDIS_CACHE_URL = "redis://127.0.0.1:6379/9"

PARTS = ("previews", "reads", "uploads", "memory")
SIZES = (2_000, 20_000)
CLIENTS = 8
BIG_UPLOAD_SIZE = 500 * 1000 * 1000
ONE_REQUEST_UPLOAD_SIZE = 95 * 1000 * 1000
MB = 1000 * 1000

# Queries are the statements other than BEGIN and COMMIT.
BUDGET_QUERIES = 5
BUDGET_LIST_P50_MS = 25
BUDGET_UPLOAD_RATIO = 0.60
BUDGET_MEMORY_MB = 100


class Plan:
    """How long and how often each measurement runs."""

    def __init__(self, quick, workers):
        self.quick = quick
        self.workers = workers
        self.runs = 1 if quick else 3
        self.read_seconds = 2 if quick else 8
        self.warmup_seconds = 1 if quick else 2
        self.jpeg_uploads = 16 if quick else 48
        self.dicom_uploads = 8 if quick else 16
        # Direct uploads take a few milliseconds each: more of them make their
        # rate as steady as that of the slower API uploads.
        self.direct_factor = 1 if quick else 5
        self.preview_repeats = 2 if quick else 5


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run the benchmark suite.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(PARTS),
        help=f"a comma-separated subset of {','.join(PARTS)}",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count(),
        help="gunicorn sync workers (default: one per core)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
    )
    args = parser.parse_args(argv)
    plan = Plan(args.quick, args.workers)
    partial = args.only != set(PARTS)

    started = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "static").mkdir(exist_ok=True)
    media = RESULTS / "media"
    shutil.rmtree(media, ignore_errors=True)
    cloud_dir = RESULTS / "cloudinary"
    shutil.rmtree(cloud_dir, ignore_errors=True)
    cloud_dir.mkdir()

    results = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "plan": vars(plan),
    }
    step("PostgreSQL")
    ensure_postgres()
    ensure_redis()
    recreate_database(args.database_url)

    with cloudinary_server(cloud_dir, RESULTS / "cloudinary.log") as cloud:
        cloud.start(ready_path="/")
        env = server_environment(args.database_url, media, cloud.cloudinary_url)
        os.environ.update(env)
        django_setup()
        results["versions"] = versions()
        results["storage"] = storage_backend()

        if "previews" in args.only:
            step("DICOM previews")
            results["previews"] = measure_previews(plan)

        token = create_user()
        detail_id = seed_detail_patient()
        if "reads" in args.only:
            results["reads"] = {}
            for size in SIZES:
                step(f"seeding {size} patients")
                seed_patients(size)
                results["reads"][size] = measure_reads(plan, env, token, detail_id)

        if "uploads" in args.only:
            step("uploads")
            results["uploads"] = measure_uploads(plan, env, token, cloud)

        if "memory" in args.only:
            step("memory")
            results["memory"] = measure_memory(plan, env, token)
            # A size that went to Cloudinary in one request while the chunked
            # upload threshold was 100 MB; no budget, but worth a figure.
            results["memory_one_request"] = measure_memory(
                plan, env, token, ONE_REQUEST_UPLOAD_SIZE
            )

    results["budgets"] = report.budgets(results)
    results["seconds"] = round(time.monotonic() - started)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    for line in report.budget_lines(results["budgets"]):
        print(line)
    if plan.quick or partial:
        print(f"figures in {RESULTS / 'latest.json'}; docs/benchmarks.md unchanged")
    else:
        path = report.write(results, ROOT / "docs" / "benchmarks.md")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


def step(text):
    print(f"== {text}", flush=True)


def server_environment(database_url, media, cloudinary_url):
    """Return the environment of the served app: production settings, plain HTTP."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CLOUDINARY_", "DJANGO_"))
    }
    env.update(
        {
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "SECURE_SSL_REDIRECT": "false",
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": database_url,
            "MEDIA_ROOT": str(media),
            "STATIC_ROOT": str(RESULTS / "static"),
            "CLOUDINARY_URL": cloudinary_url,
            "LOG_LEVEL": "WARNING",
            # One user sends all the load, so its rate limit is raised to avoid
            # 429s. DRF keeps the time of every request of the period in the
            # cache, so a period of one second keeps that list as short as the
            # 600 a minute of the default limit would.
            "API_RATE_USER": "100000/second",
            # The README's shared cache for rate limits with several workers.
            "CACHE_URL": REDIS_CACHE_URL,
            "DJANGO_SETTINGS_MODULE": "copilot.settings",
        }
    )
    return env


def django_setup():
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def machine():
    import psutil

    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "system": f"{platform.system()} {platform.release()}",
        "load_at_start": [round(value, 2) for value in os.getloadavg()],
    }


def versions():
    import django
    import gunicorn as gunicorn_package
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    return {
        "python": platform.python_version(),
        "django": django.get_version(),
        "gunicorn": gunicorn_package.__version__,
        "postgresql": postgres,
    }


def storage_backend():
    from django.conf import settings

    return settings.STORAGES["scans"]["BACKEND"]


# DICOM previews


def measure_previews(plan):
    from scans.previews import make_previews

    figures = {}
    for name in (inputs.CHEST_DICOM, inputs.CHEST_J2K_DICOM):
        path = inputs.dicom_path(name)
        size = path.stat().st_size
        timings = []
        with open(path, "rb") as handle:
            make_previews(handle, "dicom")
            for _ in range(plan.preview_repeats):
                began = time.perf_counter()
                make_previews(handle, "dicom")
                timings.append((time.perf_counter() - began) * 1000)
        median = statistics.median(timings)
        figures[name] = {
            "bytes": size,
            "ms": [round(value, 1) for value in timings],
            "median_ms": round(median, 1),
            "ms_per_mb": round(median / (size / MB), 1),
        }
    return figures


# Seeding


def create_user():
    """Create a user with every permission of the three apps; return its token."""
    from django.contrib.auth.models import Group, Permission, User
    from rest_framework.authtoken.models import Token

    user = User.objects.create_user("bench", password=secrets.token_urlsafe(16))
    group = Group.objects.create(name="Bench radiologists")
    group.permissions.set(
        Permission.objects.filter(
            content_type__app_label__in=["patients", "scans", "documents"]
        )
    )
    user.groups.add(group)
    return Token.objects.create(user=user).key


def seed_detail_patient():
    """Create the patient that GET /patients/{id} reads: 5 scans, 2 documents.

    Their rows point at small files stored through the app's storages.
    """
    from django.core.files.base import ContentFile
    from django.core.files.storage import storages

    from copilot.storage import random_name
    from documents.models import PatientDocument
    from patients.models import Patient
    from scans.models import Scan

    patient = Patient.objects.create(mrn="BENCH-DETAIL", name="Detail Patient")
    png = inputs.small_png()
    pdf = inputs.small_pdf()
    scans = storages["scans"]
    for number in range(5):
        names = [
            scans.save(random_name(folder, "png"), ContentFile(png))
            for folder in ("xrays", "xrays/previews", "xrays/thumbnails")
        ]
        Scan.objects.create(
            patient=patient,
            file=names[0],
            preview=names[1],
            thumbnail=names[2],
            body_part="CHEST",
            original_filename=f"chest-{number}.png",
            content_type="image/png",
            size=len(png),
        )
    for number in range(2):
        name = storages["documents"].save(
            random_name("reports", "pdf"), ContentFile(pdf)
        )
        PatientDocument.objects.create(
            patient=patient,
            document_name=f"Report {number}",
            file=name,
            original_filename=f"report-{number}.pdf",
            content_type="application/pdf",
            size=len(pdf),
        )
    return patient.pk


def seed_patients(total, prefix="BENCH"):
    """Add patients until there are `total`, with bulk inserts."""
    from patients.models import Patient

    have = Patient.objects.count()
    Patient.objects.bulk_create(
        (
            Patient(
                mrn=f"{prefix}-{number:06d}",
                name=f"Patient {number}",
                age=number % 100,
                gender=("Female", "Male")[number % 2],
            )
            for number in range(have, total)
        ),
        batch_size=5000,
    )
    # What autovacuum does to a table soon after a bulk insert: it sets the
    # visibility map and hint bits, without which the paginator's COUNT(*) of
    # 20,000 rows took about 1.7 ms instead of 0.6 ms.
    with connection_cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def connection_cursor():
    from django.db import connection

    return connection.cursor()


def new_patients(count, prefix):
    """Create `count` patients for uploads; return their ids."""
    from patients.models import Patient

    created = Patient.objects.bulk_create(
        Patient(mrn=f"{prefix}-{number:05d}", name=f"Upload {number}")
        for number in range(count)
    )
    return [patient.pk for patient in created]


# Reads


LOCMEM_CACHE = "django.core.cache.backends.locmem.LocMemCache"
QUERY_KINDS = (
    ("transaction", ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")),
    ("rate limit", ("rate_limits",)),
    ("audit", ("audit_entries",)),
    ("authentication", ("authtoken_token", "auth_permission")),
)


def query_kind(sql):
    for kind, marks in QUERY_KINDS:
        if sql.startswith(marks[0]) or any(mark in sql for mark in marks):
            return kind
    return "read"


def count_queries(token, paths):
    """Count the SQL statements of each path with Django's test client.

    Each path gets the count of each kind of statement, and its queries (the
    statements other than BEGIN and COMMIT) once with the served settings and
    once with the rate limits counted in process memory (as with Redis, or a
    single worker) instead of the shared cache.
    """
    from django.test import Client, override_settings

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="127.0.0.1")
    counts = {}
    for path in paths:
        kinds = statement_kinds(client, path)
        with override_settings(CACHES={"default": {"BACKEND": LOCMEM_CACHE}}):
            in_memory = statement_kinds(client, path)
        counts[path] = {
            "kinds": kinds,
            "total": sum(kinds.values()),
            "queries": queries_of(kinds),
            "memory_cache_queries": queries_of(in_memory),
        }
    return counts


def statement_kinds(client, path):
    """Return {kind: count} of the statements of a second GET of `path`."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(path)
    with CaptureQueriesContext(connection) as statements:
        response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} returned HTTP {response.status_code}.")
    kinds = {}
    for statement in statements:
        kind = query_kind(statement["sql"])
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def queries_of(kinds):
    return sum(count for kind, count in kinds.items() if kind != "transaction")


def load(*arguments, timeout=900):
    """Run the load client in its own process and return its JSON result."""
    completed = subprocess.run(
        [PYTHON, "-m", "bench.load", *map(str, arguments)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(completed.stdout)


def measure_reads(plan, env, token, detail_id):
    # The floor is a request that authenticates the token and runs one query:
    # what any API request costs before it does its own work.
    paths = {
        "list": "/patients",
        "detail": f"/patients/{detail_id}",
        "floor": "/health",
    }
    figures = {"queries": count_queries(token, paths.values())}
    figures["queries"] = {
        kind: figures["queries"][path] for kind, path in paths.items()
    }
    with gunicorn(env, RESULTS / "gunicorn.log", plan.workers) as server:
        server.start(ready_path="/health")
        common = ["--port", server.port, "--token", token, "--clients", CLIENTS]
        for path in paths.values():
            load("get", *common, "--path", path, "--seconds", plan.warmup_seconds)
        runs = {kind: [] for kind in paths}
        alone = {kind: [] for kind in paths}
        for _ in range(plan.runs):
            for kind, path in paths.items():
                with cpu_meter(env, server) as meter:
                    result = load(
                        "get", *common, "--path", path, "--seconds", plan.read_seconds
                    )
                result["cpu_ms"] = cpu_per_request(meter, result["requests"])
                runs[kind].append(result)
                # One client alone: the time the server takes for one request.
                result = load(
                    "get",
                    *common[:-1],
                    1,
                    "--path",
                    path,
                    "--seconds",
                    plan.read_seconds / 2,
                )
                alone[kind].append(result)
    for kind, results in runs.items():
        figures[kind] = {
            "runs": results,
            **medians(results, "rate", "p50_ms", "p99_ms"),
            "cpu_ms": median_cpu(results),
            "alone": {"runs": alone[kind], **medians(alone[kind], "rate", "p50_ms")},
        }
    return figures


def cpu_meter(env, server, cloud=None):
    """Measure the CPU of the workers, their PostgreSQL backends and the client."""
    database = env["DATABASE_URL"].rsplit("/", 1)[1]
    groups = {
        "workers": server.workers,
        "postgres": lambda: database_backends(database),
    }
    if cloud is not None:
        groups["cloudinary"] = lambda: [psutil.Process(cloud.process.pid)]
    return CpuMeter(groups)


def cpu_per_request(meter, requests):
    """Return the CPU milliseconds per request of each process group and in all."""
    per_request = {
        name: round(seconds * 1000 / max(requests, 1), 2)
        for name, seconds in meter.seconds.items()
    }
    per_request["total"] = round(sum(per_request.values()), 2)
    return per_request


def median_cpu(results):
    names = results[0]["cpu_ms"]
    return {
        name: round(statistics.median(one["cpu_ms"][name] for one in results), 2)
        for name in names
    }


def medians(results, *keys):
    return {
        key: round(statistics.median(result[key] for result in results), 2)
        for key in keys
    }


# Uploads


def measure_uploads(plan, env, token, cloud):
    jpeg = inputs.chest_jpeg(RESULTS / "chest.jpg")
    dicom = inputs.dicom_path(inputs.CHEST_DICOM)
    counts = {"jpeg": plan.jpeg_uploads, "dicom": plan.dicom_uploads}
    files = {"jpeg": jpeg, "dicom": dicom}
    resource_types = sdk_resource_types()

    runs = {kind: [] for kind in files}
    with gunicorn(env, RESULTS / "gunicorn.log", plan.workers) as server:
        server.start(ready_path="/health")
        common = ["--port", server.port, "--token", token, "--clients", CLIENTS]
        warmup = new_patients(CLIENTS, "BENCH-WARM")
        load("upload", *common, "--file", jpeg, "--patients", join(warmup))
        for run in range(plan.runs):
            for kind, path in files.items():
                patients = new_patients(counts[kind], f"BENCH-UP{run}-{kind}")
                api = measure_api_uploads(env, server, cloud, common, path, patients)
                with cpu_meter(env, server, cloud) as meter:
                    direct = load(
                        "sdk",
                        "--cloudinary-url",
                        cloud.cloudinary_url,
                        "--resource-type",
                        resource_types[kind],
                        "--file",
                        path,
                        "--clients",
                        CLIENTS,
                        "--requests",
                        counts[kind] * plan.direct_factor,
                        "--seconds",
                        300,
                    )
                direct["cpu_ms"] = cpu_per_request(meter, direct["requests"])
                one_run = {
                    "api": api,
                    "direct": direct,
                    "ratio": round(api["rate"] / direct["rate"], 3),
                }
                if kind == "jpeg":
                    # The floor of an API upload: the same file under a name with
                    # a rejected extension, which the API receives, parses and
                    # authenticates, then rejects with 400 without storing it.
                    rejected = measure_api_uploads(
                        env,
                        server,
                        cloud,
                        common,
                        path,
                        patients,
                        "--filename",
                        path.with_suffix(".txt").name,
                        "--expect",
                        400,
                    )
                    rejected["ratio"] = round(rejected["rate"] / direct["rate"], 3)
                    one_run["rejected"] = rejected
                runs[kind].append(one_run)
    figures = {"resource_types": resource_types}
    for kind, results in runs.items():
        figures[kind] = {
            "bytes": files[kind].stat().st_size,
            "uploads": counts[kind],
            "direct_uploads": counts[kind] * plan.direct_factor,
            "runs": results,
            "api_rate": median_of(results, "api", "rate"),
            "direct_rate": median_of(results, "direct", "rate"),
            "api_p50_ms": median_of(results, "api", "p50_ms"),
            "direct_p50_ms": median_of(results, "direct", "p50_ms"),
            "ratio": round(statistics.median(r["ratio"] for r in results), 3),
            "api_cpu_ms": median_cpu([r["api"] for r in results]),
            "direct_cpu_ms": median_cpu([r["direct"] for r in results]),
        }
        if kind == "jpeg":
            rejected = [r["rejected"] for r in results]
            figures[kind]["rejected"] = {
                **medians(rejected, "rate", "p50_ms", "ratio"),
                "cpu_ms": median_cpu(rejected),
            }
    return figures


def measure_api_uploads(env, server, cloud, common, path, patients, *options):
    """Upload `path` once to each patient through the API, with load options.

    Return the load client's figures with the CPU per upload of each process.
    """
    with cpu_meter(env, server, cloud) as meter:
        result = load(
            "upload",
            *common,
            "--file",
            path,
            "--patients",
            join(patients),
            "--seconds",
            300,
            *options,
        )
    result["cpu_ms"] = cpu_per_request(meter, result["requests"])
    return result


def sdk_resource_types():
    """Return the resource types of the app's storage, for the direct uploads."""
    from django.core.files.storage import storages

    storage = storages["scans"]
    if not hasattr(storage, "resource"):
        return {"jpeg": "image", "dicom": "raw"}
    return {
        kind: storage.resource(f"xrays/a.{extension}").resource_type
        for kind, extension in (("jpeg", "jpg"), ("dicom", "dcm"))
    }


def median_of(results, side, key):
    return round(statistics.median(result[side][key] for result in results), 2)


def join(ids):
    return ",".join(map(str, ids))


# Memory


def measure_memory(plan, env, token, size=BIG_UPLOAD_SIZE):
    """Measure the peak RSS of the gunicorn workers while one stores a large DICOM.

    The DICOM has about `size` bytes, and each size gets its own server, so
    the idle RSS of one measurement is not that left by another.
    """
    big = inputs.large_dicom(RESULTS / f"large-{size // MB}mb.dcm", size)
    jpeg = RESULTS / "chest.jpg"
    env = {**env, "MAX_UPLOAD_SIZE": str(BIG_UPLOAD_SIZE + 100 * MB)}
    with gunicorn(env, RESULTS / "gunicorn.log", plan.workers) as server:
        server.start(ready_path="/health")
        common = ["--port", server.port, "--token", token]
        # Every worker loads the upload code and renders once before idling.
        warm = new_patients(4 * CLIENTS, f"BENCH-MEMWARM-{size}")
        load("upload", *common, "--file", jpeg, "--patients", join(warm))
        time.sleep(1)
        workers = server.workers()
        idle = {worker.pid: worker.memory_info().rss for worker in workers}
        patient = new_patients(1, f"BENCH-MEM-{size}")[0]
        with RssSampler(workers) as sampler:
            upload = load("big-upload", *common, "--file", big, "--patients", patient)
            time.sleep(0.5)
    growth = {pid: sampler.peaks[pid] - idle[pid] for pid in idle}
    pid = max(growth, key=growth.get)
    return {
        "bytes": big.stat().st_size,
        "upload": upload,
        "samples": sampler.samples,
        "idle_mb": round(idle[pid] / MB, 1),
        "peak_mb": round(sampler.peaks[pid] / MB, 1),
        "growth_mb": round(growth[pid] / MB, 1),
        "workers": {
            str(pid): {
                "idle_mb": round(idle[pid] / MB, 1),
                "peak_mb": round(sampler.peaks[pid] / MB, 1),
            }
            for pid in idle
        },
    }


if __name__ == "__main__":
    sys.exit(main())
