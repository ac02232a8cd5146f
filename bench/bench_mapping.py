"""Benchmark: map and check 1,000,000 Salesforce accounts into QuickBooks customers, in chunks.

Runs the shipped sf_accounts_to_qb_customers mapping over generated accounts (realistic shapes:
multi-line streets, names over QuickBooks' 41 characters, unknown types, owners that are and are
not sales reps, a few postal codes too long so rows get rejected) one chunk at a time, as the map
task does, then runs the mapping's source and target quality suites through Great Expectations.
In the same run it times the plain row-by-row interpreter of the same mapping on a sample and
extrapolates, and prints every figure as a ratio to that baseline and to the targets:
>= 100,000 rows/s for mapping, peak RSS < 1.5 GB for the million.

    .venv/bin/python bench/bench_mapping.py                  # 1,000,000 rows, chunks of 100,000
    .venv/bin/python bench/bench_mapping.py --rows 200000 --naive-sample 20000 --no-checks
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time

TARGET_ROWS_PER_S = 100_000
TARGET_PEAK_RSS_MB = 1536


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def sales_reps():
    import pandas as pd

    first = ["Angela", "Bob", "Carla", "Dirk", "Eva", "Frank", "Greta", "Hans", "Ines", "Joost"]
    last = ["Richer", "Smith", "de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "Bos"]
    rows = [
        (f, l_, f"{f[0]}{l_[0]}{i % 10}") for i, (f, l_) in enumerate((f, l_) for f in first for l_ in last)
    ]
    return pd.DataFrame(rows, columns=["FirstName", "LastName", "Initial"])


def generate_chunk(start: int, size: int, seed: int):
    """Return `size` generated accounts with ids from `start`, as the extract step would stage them."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed + start)

    def pick(pool, p=None):
        return pd.Series(
            np.asarray(pool, dtype=object)[rng.integers(0, len(pool), size)]
            if p is None
            else np.asarray(pool, dtype=object)[rng.choice(len(pool), size, p=p)],
            dtype="str",
        )

    words = [
        "Acme",
        "Global",
        "Nordic",
        "Van der Berg",
        "Industrial",
        "Solutions",
        "Holding",
        "Trading",
        "Logistics",
        "International",
        "Consulting",
        "Bouwbedrijf",
        "Technologies",
        "Partners",
    ]
    forms = ["B.V.", "N.V.", "Ltd", "Inc.", "GmbH", "& Co", "Group", "Services and Maintenance Europe"]
    ids = pd.Series([f"001{n:015d}" for n in range(start, start + size)], dtype="str")
    name = pick(words) + " " + pick(words) + " " + pick(forms)
    street = (
        pick(["Main Street", "Keizersgracht", "Industrieweg", "Stationsplein", "Long Avenue"])
        + " "
        + pd.Series(rng.integers(1, 999, size)).astype("str")
    )
    suite = pick(["", "", "", "\nSuite 4", "\nFloor 2\nBuilding C"])
    city = pick(
        ["Amsterdam", "Rotterdam", "Utrecht", "Eindhoven", "Groningen", "Llanfairpwllgwyngyll Community Area"]
    )
    postal = pick(
        ["1011 AB", "3011 CD", "3511 EF", "90210", "SW1A 1AA", "12345-6789-0000-9"],
        p=[0.25, 0.25, 0.2, 0.15, 0.149, 0.001],
    )
    owner = rng.integers(0, 120, size)  # 100 of the 120 owners are sales reps
    first_pool = np.array(
        ["Angela", "Bob", "Carla", "Dirk", "Eva", "Frank", "Greta", "Hans", "Ines", "Joost", "Kees", "Lotte"],
        dtype=object,
    )
    last_pool = np.array(
        ["Richer", "Smith", "de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "Bos"],
        dtype=object,
    )
    email_user = pick(
        ["info", "sales", "finance", "j.jansen", "bad address", "orders"],
        p=[0.3, 0.2, 0.2, 0.195, 0.005, 0.1],
    )
    email_domain = pick(["example.com", "acme.nl", "firma.de", "shop.co.uk"])
    phone = "+31 20 " + pd.Series(rng.integers(1_000_000, 9_999_999, size)).astype("str")
    frame = pd.DataFrame(
        {
            "Id": ids,
            "Name": name,
            "AccountNumber": pd.Series(rng.integers(10_000, 99_999, size)).astype("str"),
            "BillingStreet": street + suite,
            "BillingCity": city,
            "BillingState": pick(["NH", "ZH", "UT", "NB", "CA", "NY"]),
            "BillingPostalCode": postal,
            "BillingCountry": pick(["NL", "Netherlands", "DE", "United Kingdom", "US"]),
            "ShippingStreet": street,
            "ShippingCity": city,
            "ShippingState": pick(["NH", "ZH", "UT"]),
            "ShippingPostalCode": pick(["1011 AB", "3011 CD"]),
            "ShippingCountry": pick(["NL", "DE"]),
            "Phone": phone,
            "Fax": pick(["", "", "+31 20 7654321"]),
            "Email__c": email_user + "@" + email_domain,
            "Owner.FirstName": pd.Series(first_pool[owner % 12], dtype="str"),
            "Owner.LastName": pd.Series(last_pool[owner % 10], dtype="str"),
            "Type": pick(
                [
                    "Customer - Direct",
                    "Customer - Channel",
                    "Prospect",
                    "Installation Partner",
                    "Other",
                    "Legacy type",
                    "",
                ]
            ),
            "Description": pick(["Key account", "", "Imported from CRM migration 2019; see notes"]),
        }
    )
    return frame


def run(args) -> int:
    import pandas as pd

    from erpsync.mapping import load_flow
    from erpsync.mapping._rowwise import apply_rowwise

    mapping = load_flow("sf_accounts_to_qb_customers")
    compiled = mapping.compile()
    reps = sales_reps()
    lookups = {"sales_reps": reps}

    print(
        f"mapping {mapping.flow}: {len(mapping.fields)} target fields, {args.rows:,} rows in chunks of "
        f"{args.chunk:,}; python {sys.version.split()[0]}, pandas {pd.__version__}"
    )
    baseline_rss = current_rss_mb()

    # -- vectorized: map (and check) every chunk, as the map task does ------------------------------
    t_generate = t_map = t_check = cpu_map = 0.0
    mapped_rows = rejected_rows = quality_bad = 0
    rejected_by_rule: dict[str, int] = {}
    failed_by_rule: dict[str, int] = {}
    run_checks = None
    if not args.no_checks:
        from erpsync.quality import SeenValues, run_checks

        seen_source, seen_target = SeenValues(), SeenValues()  # unique rules across all chunks

        t0 = time.perf_counter()
        import great_expectations  # noqa: F401  (run_checks imports it lazily; timed apart here)

        t_gx_import = time.perf_counter() - t0
    for start in range(0, args.rows, args.chunk):
        size = min(args.chunk, args.rows - start)
        t0 = time.perf_counter()
        chunk = generate_chunk(start, size, args.seed)
        t1, c1 = time.perf_counter(), time.process_time()
        out = compiled.apply(chunk, lookups)
        t2 = time.perf_counter()
        cpu_map += time.process_time() - c1
        t_generate += t1 - t0
        t_map += t2 - t1
        mapped_rows += len(out.frame)
        rejected_rows += len(chunk) - len(out.frame)
        for rule, count in out.rejected["rule"].value_counts().items():
            rejected_by_rule[rule] = rejected_by_rule.get(rule, 0) + int(count)
        if run_checks is not None:
            source = run_checks(
                chunk,
                mapping.quality.source,
                key_column="Id",
                suite_name="accounts_source",
                across=seen_source,
            )
            target = run_checks(
                out.frame,
                mapping.quality.target,
                key_column="_source_key",
                suite_name="customers",
                across=seen_target,
            )
            t_check += time.perf_counter() - t2
            quality_bad += source.bad_count + target.bad_count
            for result in (source, target):
                for rule, count in result.failed_by_rule.items():
                    failed_by_rule[rule] = failed_by_rule.get(rule, 0) + count
        del chunk, out
        gc.collect()
    peak_after_vectorized = peak_rss_mb()

    # -- naive: the same mapping row by row, on a sample ---------------------------------------------
    sample = generate_chunk(0, args.naive_sample, args.seed)
    records = sample.to_dict("records")
    rep_rows = reps.to_dict("records")
    t0, c0 = time.perf_counter(), time.process_time()
    naive_rows, naive_rejected = apply_rowwise(mapping, records, {"sales_reps": rep_rows})
    t_naive_sample = time.perf_counter() - t0
    cpu_naive = time.process_time() - c0
    vector_sample = compiled.apply(sample, lookups)
    vector_rows = [
        {k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in row.items()}
        for row in vector_sample.frame.to_dict("records")
    ]
    agree = vector_rows == naive_rows and len(naive_rejected) == len(vector_sample.rejected)

    rate_map = args.rows / t_map
    rate_naive = args.naive_sample / t_naive_sample
    naive_projected = args.rows / rate_naive
    peak = peak_rss_mb()
    print()
    print(f"generated input (not counted)     {t_generate:8.2f} s")
    print(
        f"vectorized mapping                {t_map:8.2f} s   {rate_map:12,.0f} rows/s "
        f"(CPU {cpu_map:.2f} s: {args.rows / cpu_map:,.0f} rows per CPU-second)"
    )
    if not args.no_checks:
        rate_both = args.rows / (t_map + t_check)
        print(f"GX import (once per process)      {t_gx_import:8.2f} s")
        print(f"quality checks (source + target)  {t_check:8.2f} s   {args.rows / t_check:12,.0f} rows/s")
        print(f"map + check                       {t_map + t_check:8.2f} s   {rate_both:12,.0f} rows/s")
    print(
        f"naive row-by-row loop             {t_naive_sample:8.2f} s   {rate_naive:12,.0f} rows/s "
        f"(measured on a sample of {args.naive_sample:,} rows, extrapolated to {naive_projected:,.0f} s "
        f"for {args.rows:,}; {args.naive_sample / cpu_naive:,.0f} rows per CPU-second)"
    )
    print(
        f"rows mapped / rejected            {mapped_rows:,} / {rejected_rows:,}  {dict(sorted(rejected_by_rule.items()))}"
    )
    if not args.no_checks:
        print(
            f"quality failures (row, rule)      {sum(failed_by_rule.values()):,}  {dict(sorted(failed_by_rule.items()))}"
        )
    print(
        f"same rows on the sample           {'yes' if agree else 'NO'} (naive {len(naive_rows):,} mapped / "
        f"{len(naive_rejected):,} rejections, vectorized {len(vector_sample.frame):,} / {len(vector_sample.rejected):,})"
    )
    print(
        f"RSS at start / peak               {baseline_rss:8.0f} MB / {peak:.0f} MB "
        f"(peak after the vectorized million: {peak_after_vectorized:.0f} MB)"
    )
    print()
    print("ratios")
    print(
        f"  vectorized mapping vs naive loop       {rate_map / rate_naive:8.1f} x faster (wall clock), "
        f"{(args.rows / cpu_map) / (args.naive_sample / cpu_naive):.1f} x (CPU time)"
    )
    if not args.no_checks:
        print(f"  map + check vs naive mapping alone     {rate_both / rate_naive:8.1f} x faster")
    print(
        f"  mapping rate vs target 100,000 rows/s  {rate_map / TARGET_ROWS_PER_S:8.2f} x  "
        f"({'met' if rate_map >= TARGET_ROWS_PER_S else 'MISSED'})"
    )
    print(
        f"  peak RSS vs target 1.5 GB              {peak / TARGET_PEAK_RSS_MB:8.2f} x  "
        f"({'met' if peak < TARGET_PEAK_RSS_MB else 'MISSED'})"
    )
    if args.per_field:
        print()
        print(f"CPU time per target field on one chunk of {args.chunk:,} rows (best of 3)")
        chunk = generate_chunk(0, args.chunk, args.seed)
        tables = compiled._tables(lookups)
        costs = {}
        for name, program in compiled.header.programs.items():
            best = float("inf")
            for _ in range(3):
                c0 = time.process_time()
                program.evaluate(chunk, tables)
                best = min(best, time.process_time() - c0)
            costs[name] = best
        for name, cost in sorted(costs.items(), key=lambda kv: -kv[1]):
            print(f"  {name:28s} {cost * 1000:7.1f} ms")
    return 0 if agree and rate_map >= TARGET_ROWS_PER_S and peak < TARGET_PEAK_RSS_MB else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--naive-sample", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--no-checks", action="store_true", help="map only, skip the GX suites")
    parser.add_argument("--per-field", action="store_true", help="also print the CPU cost of each field")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    sys.exit(main())
