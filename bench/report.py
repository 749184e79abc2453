"""Budgets and docs/benchmarks.md from the results of one run of the suite.

The findings in bench/findings.md (what was profiled, what was changed and what
the code cannot change) are copied into the page as they are.
`python -m bench.report` rewrites the page from the last full run's results.
"""

import json
from pathlib import Path

from bench import run
from bench.servers import gunicorn_command_line

FINDINGS = Path(__file__).resolve().parent / "findings.md"


def budgets(results):
    """Return [(name, passed, measured)] for the budgets of the parts measured."""
    checks = []
    if "reads" in results:
        checks += read_budgets(results["reads"])
    if "uploads" in results:
        ratio = results["uploads"]["jpeg"]["ratio"]
        checks.append(
            (
                f"JPEG upload rate through the API at least "
                f"{run.BUDGET_UPLOAD_RATIO:.0%} of the direct SDK rate",
                ratio >= run.BUDGET_UPLOAD_RATIO,
                f"{ratio:.0%}",
            )
        )
    if "memory" in results:
        memory = results["memory"]
        growth = memory["growth_mb"]
        stored = memory["upload"]["status"] == 201
        checks.append(
            (
                f"worker memory at most {run.BUDGET_MEMORY_MB} MB above idle "
                "while storing a 500 MB upload",
                growth <= run.BUDGET_MEMORY_MB and stored,
                f"{growth} MB"
                + ("" if stored else f" (HTTP {memory['upload']['status']})"),
            )
        )
    return checks


def read_budgets(reads):
    # Sizes are numbers, or strings in results read back from JSON.
    reads = {int(size): figures for size, figures in reads.items()}
    queries = {
        size: (
            reads[size]["queries"]["list"]["queries"],
            reads[size]["queries"]["detail"]["queries"],
        )
        for size in run.SIZES
    }
    worst = max(max(pair) for pair in queries.values())
    same = len(set(queries.values())) == 1
    query_text = ", ".join(
        f"list {pair[0]} and detail {pair[1]} at {size:,}"
        for size, pair in queries.items()
    )

    largest = run.SIZES[-1]
    p50 = reads[largest]["list"]["p50_ms"]
    return [
        (
            f"queries per read request at most {run.BUDGET_QUERIES}, the same "
            "at every size",
            worst <= run.BUDGET_QUERIES and same,
            query_text,
        ),
        (
            f"GET /patients p50 at most {run.BUDGET_LIST_P50_MS} ms at "
            f"{largest:,} patients",
            p50 <= run.BUDGET_LIST_P50_MS,
            f"{p50} ms",
        ),
    ]


def budget_lines(checks):
    return [
        f"{'PASS' if passed else 'FAIL'}: {name}: {measured}"
        for name, passed, measured in checks
    ]


def main():
    """Rewrite docs/benchmarks.md from the results of the last full run."""
    results = json.loads((run.RESULTS / "latest.json").read_text())
    if results["plan"]["quick"] or set(run.PARTS) - set(results):
        raise SystemExit("The last run was not a full run: run `make bench`.")
    path = write(results, run.ROOT / "docs" / "benchmarks.md")
    print(f"wrote {path.relative_to(run.ROOT)}")


def write(results, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results))
    return path


def render(results):
    machine = results["machine"]
    versions = results["versions"]
    workers = results["plan"]["workers"]
    if workers == machine["cores"]:
        worker_note = "one sync worker per core, the default of `--workers`"
    else:
        worker_note = "sync workers as `--workers` set them"
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench.run`); do not edit by hand.",
        "The findings at the end come from `bench/findings.md`.",
        "",
        "## Run",
        "",
        f"- Date: {results['date']}; the run took {results['seconds']} s.",
        f"- Machine: {machine['cores']} cores ({machine['cpu']}), "
        f"{machine['memory_gib']} GiB of memory, {machine['system']}; load "
        f"average at the start {', '.join(map(str, machine['load_at_start']))}. "
        "The machine was shared with other test runs, so single figures are "
        "noisy: each figure is the median of "
        f"{results['plan']['runs']} runs, and each ratio is measured within "
        "one run.",
        f"- Software: Python {versions['python']}, Django {versions['django']}, "
        f"gunicorn {versions['gunicorn']}, PostgreSQL {versions['postgresql']}.",
        "- Command: `make bench`. It installs requirements-dev.txt and "
        "bench/requirements.txt, starts PostgreSQL and Redis when they are not "
        "running, "
        "recreates the database `copilot_bench`, runs every measurement and "
        "stops its servers.",
        f"- Server: `{gunicorn_command_line(workers)}` ({worker_note}) with "
        "`DEBUG=false`, a random "
        "`SECRET_KEY`, `SECURE_SSL_REDIRECT=false` (plain HTTP on loopback), "
        "`ALLOWED_HOSTS=127.0.0.1`, `CONN_MAX_AGE` at its default (60 s), "
        f"`CACHE_URL={run.REDIS_CACHE_URL}` for the rate limits and "
        "`LOG_LEVEL=WARNING`.",
        f"- Storage of the served app: `{results['storage']}`; "
        "`CLOUDINARY_URL` points at the Cloudinary-compatible server "
        "(`python -m copilot.testing.cloudinary_server`) that the suite starts.",
        f"- Load: `python -m bench.load`, a separate process with {run.CLIENTS} "
        "threads, each sending one request after another over its own HTTP "
        "connection to 127.0.0.1 (gunicorn's sync workers close the connection "
        "after each response, and the client opens a new one). Client, "
        "workers, PostgreSQL and Redis share the machine's cores.",
        "",
        "## Budgets",
        "",
        "| budget | measured | result |",
        "| --- | --- | --- |",
    ]
    for name, passed, measured in results["budgets"]:
        lines.append(f"| {name} | {measured} | {'PASS' if passed else 'FAIL'} |")
    lines += reads_section(results) + uploads_section(results)
    lines += memory_section(results) + previews_section(results)
    lines += ["", "## Findings", ""]
    lines += FINDINGS.read_text().strip().splitlines()
    return "\n".join(lines) + "\n"


READS = (
    ("list", "GET /patients"),
    ("detail", "GET /patients/{id}"),
    ("floor", "GET /health"),
)


def reads_section(results):
    lines = [
        "",
        "## Reads",
        "",
        "The list is the first page (50 patients with their scan and document "
        "counts); the detail is a patient with 5 scans and 2 documents. "
        "`GET /health`, sent with the same token, is the floor: it goes through "
        "the same middleware, authenticates the token and runs one query "
        "(`SELECT 1`), with no rate limit and no audit entry.",
        "",
        "### SQL statements per request",
        "",
        "Counted with Django's test client and `CaptureQueriesContext` on the "
        "seeded database with the served settings. *Queries* are the statements "
        "other than `BEGIN` and `COMMIT`, which are counted apart; the budget "
        "applies to queries. The last column counts queries again with the "
        "rate limits kept in process memory instead of the shared cache.",
        "",
        "| patients | request | queries | authentication | rate limit | "
        "read | audit | BEGIN, COMMIT | queries, rate limits in memory |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, figures in results["reads"].items():
        for kind, label in READS:
            if kind not in figures["queries"]:
                continue
            counts = figures["queries"][kind]
            kinds = counts["kinds"]
            by_kind = " | ".join(
                str(kinds.get(name, 0))
                for name in ("authentication", "rate limit", "read", "audit")
            )
            lines.append(
                f"| {int(size):,} | {label} | {counts['queries']} | {by_kind} | "
                f"{kinds.get('transaction', 0)} | {counts['memory_cache_queries']} |"
            )
    lines += [
        "",
        "### Load",
        "",
        f"{run.CLIENTS} concurrent clients, {results['plan']['read_seconds']} s "
        "per run after a warm-up. The 1-client column is the same request from "
        "one client alone, run after each 8-client run: the time one request "
        "takes when nothing waits. CPU is the CPU time per request of the "
        "gunicorn workers, their PostgreSQL backends and the load client, "
        "measured with psutil over the 8-client runs.",
        "",
        "| patients | request | requests/s | p50 ms | p99 ms | 1 client: "
        "requests/s, p50 ms | CPU ms: workers, PostgreSQL, client | runs "
        "(requests/s, p50 ms) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, figures in results["reads"].items():
        for kind, label in READS:
            if kind not in figures:
                continue
            row = figures[kind]
            runs = "; ".join(f"{one['rate']}, {one['p50_ms']}" for one in row["runs"])
            errors = sum(one["errors"] for one in row["runs"])
            if errors:
                runs += f" ({errors} errors)"
            alone = row["alone"]
            cpu = row["cpu_ms"]
            lines.append(
                f"| {int(size):,} | {label} | {row['rate']} | {row['p50_ms']} | "
                f"{row['p99_ms']} | {alone['rate']}, {alone['p50_ms']} | "
                f"{cpu['workers']}, {cpu['postgres']}, {cpu['client']} | {runs} |"
            )
    return lines


def uploads_section(results):
    uploads = results["uploads"]
    types = uploads["resource_types"]
    lines = [
        "",
        "## Uploads",
        "",
        f"{run.CLIENTS} concurrent clients. *API* is `POST "
        "/patients/{id}/upload/scan` through gunicorn: the upload is checked, "
        "hashed, a preview and a thumbnail are rendered (for a DICOM this "
        "decodes the image, which costs most of the CPU), and the original and "
        "both PNGs are stored, then the row is saved. *Direct* is "
        "`cloudinary.uploader.upload` of the same bytes to the same server, "
        f"from the load process (resource type `{types['jpeg']}` for the JPEG, "
        f"`{types['dicom']}` for the DICOM). The ratio is API rate / direct "
        "rate within one run; its median is over the runs. CPU is the CPU time "
        "per upload of the gunicorn workers (API only), the Cloudinary server "
        "and the load client, measured with psutil.",
        "",
        "| file | size | uploads per run: API, direct | API uploads/s | "
        "direct uploads/s | API p50 ms | direct p50 ms | API/direct | ratios per "
        "run | CPU ms API: workers, server, client | CPU ms direct: server, "
        "client |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {"jpeg": "chest JPEG", "dicom": "RG1_UNCR.dcm"}
    for kind, label in names.items():
        row = uploads[kind]
        ratios = ", ".join(f"{one['ratio']:.0%}" for one in row["runs"])
        errors = sum(
            one["api"]["errors"] + one["direct"]["errors"] for one in row["runs"]
        )
        if errors:
            ratios += f" ({errors} errors)"
        api, direct = row["api_cpu_ms"], row["direct_cpu_ms"]
        lines.append(
            f"| {label} | {row['bytes'] / 1000:,.0f} kB | {row['uploads']}, "
            f"{row['direct_uploads']} | {row['api_rate']} | {row['direct_rate']} | "
            f"{row['api_p50_ms']} | {row['direct_p50_ms']} | {row['ratio']:.0%} | "
            f"{ratios} | {api['workers']}, {api['cloudinary']}, {api['client']} | "
            f"{direct['cloudinary']}, {direct['client']} |"
        )
    rejected = uploads["jpeg"].get("rejected")
    if rejected:
        cpu = rejected["cpu_ms"]
        lines += [
            "",
            "*Rejected* is the floor of an API upload: the same chest JPEG sent "
            "the same way under the name `chest.txt`, which the API receives, "
            "parses and authenticates, then returns 400 (invalid file type) "
            "without storing anything. It runs in each run after the direct "
            "uploads, and its ratio is its rate / the direct rate of that run.",
            "",
            "| file | uploads/s | p50 ms | rejected/direct | CPU ms: workers, "
            "PostgreSQL, server, client |",
            "| --- | --- | --- | --- | --- |",
            f"| chest JPEG as chest.txt | {rejected['rate']} | "
            f"{rejected['p50_ms']} | {rejected['ratio']:.0%} | {cpu['workers']}, "
            f"{cpu['postgres']}, {cpu['cloudinary']}, {cpu['client']} |",
        ]
    return lines


def memory_section(results):
    memory = results["memory"]
    lines = [
        "",
        "## Memory",
        "",
        f"One upload of a {memory['bytes'] / 1e6:,.0f} MB multi-frame DICOM "
        "(RG1_UNCR.dcm's frame repeated) with `MAX_UPLOAD_SIZE` raised for the "
        "run, streamed by the client from disk. The RSS of each gunicorn worker "
        "was sampled every 10 ms with psutil; idle is the RSS after every worker "
        "had served uploads, just before the large one. The same was measured "
        "for a 94 MB file, a size that went to Cloudinary in one request while "
        "`CLOUDINARY_CHUNKED_UPLOAD_THRESHOLD` was 100 MB and now goes in "
        "chunks; it has no budget.",
        "",
        "| upload | answer | seconds | samples | idle MB | peak MB | growth MB | "
        "all workers, idle → peak MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in ("memory", "memory_one_request"):
        if key not in results:
            continue
        row = results[key]
        workers = ", ".join(
            f"{one['idle_mb']} → {one['peak_mb']}" for one in row["workers"].values()
        )
        lines.append(
            f"| {row['bytes'] / 1e6:,.0f} MB | HTTP {row['upload']['status']} | "
            f"{row['upload']['seconds']} | {row['samples']} | {row['idle_mb']} | "
            f"{row['peak_mb']} | {row['growth_mb']} | {workers} |"
        )
    return lines


def previews_section(results):
    lines = [
        "",
        "## DICOM previews",
        "",
        '`scans.previews.make_previews(file, "dicom")` in one process, after '
        "one warm-up call; milliseconds per megabyte (10^6 bytes) of the file.",
        "",
        "| file | size | median ms | ms per MB | runs ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in results["previews"].items():
        lines.append(
            f"| {name} | {row['bytes'] / 1e6:.1f} MB | {row['median_ms']} | "
            f"{row['ms_per_mb']} | {', '.join(map(str, row['ms']))} |"
        )
    return lines


if __name__ == "__main__":
    main()
