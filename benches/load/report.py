"""Small parsers for scripts/bench.sh (standard library only).

  report.py h2load FILE           h2load's summary as shell assignments:
                                  rps= total= succeeded= failed= errored= timeout=
                                  s2xx= s3xx= s4xx= s5xx=
  report.py metrics URL           the service's storage_grants_rpc_duration_seconds
                                  counts, one "METHOD CODE COUNT" line each
  report.py delta BEFORE AFTER M  for method M between two snapshots: ok= cancelled=
                                  (streams h2load reset at its deadline) not_ok= codes=
  report.py latency LOG...        percentiles (µs) of h2load --log-file files:
                                  p50= p90= p99= max= n= achieved_rps=
  report.py table ROWS            the throughput tables (Markdown) from bench.sh's rows
  report.py perfgroups REPORT     perf's self-cost report grouped by component (Markdown)
  report.py soak CSV FILL_PHASE SOAK_PHASE
                                  RSS figures of the soak: start= end= min= max= peak=
                                  (MiB, over SOAK_PHASE) fill_end= (none: no sample) spread_pct=
"""

import re
import sys
import urllib.request


def h2load(path: str) -> None:
    text = open(path, encoding="utf-8", errors="replace").read()
    out = {k: 0 for k in "rps total succeeded failed errored timeout s2xx s3xx s4xx s5xx".split()}
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(
        r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    if m:
        out["total"], out["succeeded"], out["failed"], out["errored"], out["timeout"] = map(
            int, m.groups()
        )
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out["s2xx"], out["s3xx"], out["s4xx"], out["s5xx"] = map(int, m.groups())
    for k, v in out.items():
        print(f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}")


METRIC = re.compile(
    r'^storage_grants_rpc_duration_seconds_count\{(?P<labels>[^}]*)\} (?P<value>[\d.e+]+)'
)


def metrics(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        print(labels.get("method", "?"), labels.get("code", "?"), int(float(m.group("value"))))


def _read_counts(path: str) -> dict:
    counts = {}
    for line in open(path, encoding="utf-8"):
        parts = line.split()
        if len(parts) == 3:
            counts[(parts[0], parts[1])] = int(parts[2])
    return counts


def delta(before: str, after: str, method: str) -> None:
    a, b = _read_counts(before), _read_counts(after)
    ok = cancelled = not_ok = 0
    codes = []
    for (m, code), value in b.items():
        if m != method:
            continue
        d = value - a.get((m, code), 0)
        if code == "OK":
            ok += d
        elif code == "CANCELLED":
            # h2load resets the streams still in flight when its time is up.
            cancelled += d
        else:
            not_ok += d
        if d and code != "OK":
            codes.append(f"{code}:{d}")
    print(f"ok={ok} cancelled={cancelled} not_ok={not_ok} codes={','.join(codes) or '-'}")


def latency(paths) -> None:
    # h2load --log-file: start time (µs since epoch), status, µs until the response
    # ended; one file per thread or run.
    lat, starts = [], []
    for path in paths:
        for line in open(path, encoding="utf-8"):
            parts = line.split("\t")
            if len(parts) >= 3:
                starts.append(int(parts[0]))
                lat.append(int(parts[2]))
    if not lat:
        print("n=0")
        return
    lat.sort()

    def pct(p: float) -> int:
        return lat[min(len(lat) - 1, int(round((len(lat) - 1) * p)))]

    span = (max(starts) - min(starts)) / 1e6 or 1
    print(f"p50={pct(0.5)} p90={pct(0.9)} p99={pct(0.99)} max={lat[-1]} n={len(lat)} "
          f"achieved_rps={len(lat) / span:.0f}")


def soak(path: str, fill: str, phase: str) -> None:
    rows = []
    for line in open(path, encoding="utf-8"):
        parts = line.strip().split(",")
        if len(parts) == 3 and parts[1].isdigit():
            rows.append((float(parts[0]), int(parts[1]) / 1024, parts[2]))
    fill_rows = [r for r in rows if r[2] == fill]
    soak_rows = [r for r in rows if r[2] == phase]
    if not soak_rows:
        print("samples=0")
        return
    values = [r[1] for r in soak_rows]
    lo, hi = min(values), max(values)
    print(
        f"samples={len(values)} start={values[0]:.1f} end={values[-1]:.1f} min={lo:.1f} "
        f"max={hi:.1f} fill_end={(f'{fill_rows[-1][1]:.1f}' if fill_rows else 'none')} "
        f"spread_pct={(hi - lo) / lo * 100:.1f}"
    )


def _median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def table(path: str) -> None:
    """The throughput tables from bench.sh's rows: ROUND|GROUP|LABEL|rate|checks|bytes,
    in the order they ran. Each round runs its baseline before every other call and once
    more at its end, so each call's ratio is taken against the mean of the baseline runs
    just before and just after it: a machine whose speed drifts during a round (other
    work on it, the CPUs' clocks) moves the call and its reference alike."""
    rows = []
    for line in open(path, encoding="utf-8"):
        parts = line.rstrip("\n").split("|")
        if len(parts) == 6:
            rows.append({"seq": len(rows), "round": int(parts[0]), "group": parts[1],
                         "label": parts[2], "rate": float(parts[3]), "checks": parts[4],
                         "bytes": int(parts[5])})
    baselines = {"grpc": "health check (baseline)",
                 "warn": "health check (baseline), RUST_LOG=warn",
                 "http": "gateway GET /healthz (baseline)"}
    for r in rows:
        r["base"] = baselines[r["group"]] == r["label"]
    rounds = sorted({r["round"] for r in rows})
    # Each group's baseline runs of each round, in the order they ran, and their mean.
    base_runs = {}
    for r in rows:
        if r["base"]:
            base_runs.setdefault((r["group"], r["round"]), []).append(r)
    base_mean = {k: sum(r["rate"] for r in runs) / len(runs) for k, runs in base_runs.items()}

    def bracket(row):
        """Mean of the baseline runs of the row's own group and round next to it."""
        same = base_runs.get((row["group"], row["round"]), [])
        near = ([r["rate"] for r in same if r["seq"] < row["seq"]][-1:]
                + [r["rate"] for r in same if r["seq"] > row["seq"]][:1])
        return sum(near) / len(near) if near else None

    def summary(group, label, ref_group):
        mine = [r for r in rows if r["group"] == group and r["label"] == label]
        if mine[0]["base"]:
            # One figure per round for the baseline: the mean of its runs.
            mine_rounds = [n for n in rounds if (group, n) in base_mean]
            rates = [base_mean[(group, n)] for n in mine_rounds]
            ratios = [base_mean[(group, n)] / base_mean[(ref_group, n)] for n in mine_rounds
                      if (ref_group, n) in base_mean]
        else:
            rates = [r["rate"] for r in mine]
            refs = [bracket(r) if ref_group == group else base_mean.get((ref_group, r["round"]))
                    for r in mine]
            ratios = [r["rate"] / ref for r, ref in zip(mine, refs) if ref]
        failed = [r for r in mine if r["checks"].startswith("FAILED")]
        checks = ("all successes (" + "; ".join(r["checks"] for r in mine[:1]) + ", …)"
                  if not failed else "; ".join(f"round {r['round']}: {r['checks']}" for r in failed))
        ratio = (f"**{_median(ratios):.2f}x** ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else "n/a")
        per_round = " / ".join(f"{x:.0f}" for x in rates)
        return mine, rates, ratio, per_round, checks

    print(f"Median of {len(rounds)} rounds; each ratio is taken against the mean of the baseline "
          "runs just before and just after the call, in the same round (range in brackets); "
          "a baseline's rate per round is the mean of its runs in that round. Across the two "
          "servers (RUST_LOG=warn), against the other server's mean baseline of the round.")
    print()
    print("| RPC | calls/s (median) | per round | vs health check | server log bytes/call | checks |")
    print("|---|---:|---|---:|---:|---|")
    labels = list(dict.fromkeys(r["label"] for r in rows if r["group"] in ("grpc", "warn")))
    for label in labels:
        group = next(r["group"] for r in rows if r["label"] == label)
        mine, rates, ratio, per_round, checks = summary(group, label, group)
        if group == "warn":
            other = summary(group, label, "grpc")[2]
            ratio = f"{ratio} of its own server's baseline; {other} of the audit-on server's"
        bytes_ = _median([r["bytes"] for r in mine])
        print(f"| {label} | {_median(rates):.0f} | {per_round} | {ratio} | {bytes_:.0f} | {checks} |")
    print()
    print("### HTTP gateway (HTTP/1.1, same listener)")
    print()
    print("| route | requests/s (median) | per round | vs /healthz | checks |")
    print("|---|---:|---|---:|---|")
    for label in dict.fromkeys(r["label"] for r in rows if r["group"] == "http"):
        mine, rates, ratio, per_round, checks = summary("http", label, "http")
        print(f"| {label.removeprefix('gateway ')} | {_median(rates):.0f} | {per_round} | {ratio} | {checks} |")


# Self cost of `perf report --no-children --sort dso,sym` lines, grouped by what the
# code is for. First match wins; the patterns are substrings of the symbol or the DSO.
PERF_GROUPS = [
    ("kernel: TCP/loopback send+receive, syscalls, scheduling", ["[kernel.kallsyms]"]),
    ("allocator: mimalloc, glibc malloc/free", ["malloc", "_int_free", "cfree", "unlink_chunk",
                                                "realloc", "calloc", "tcache", " mi_", " _mi_",
                                                "__rust_alloc", "__rust_dealloc",
                                                "__rust_realloc", "__rdl_"]),
    ("memmove/memcpy/memcmp/memset (glibc)", ["__mem"]),
    ("other glibc (write, syscall wrappers, locks)", ["libc.so"]),
    ("logging: tracing-subscriber, fmt, sharded-slab", ["tracing_subscriber", "tracing_core",
                                                         "sharded_slab", "core::fmt", "tracing::",
                                                         "<&T as core::fmt", "fmt::Display",
                                                         "fmt::Debug", "Formatter"]),
    ("SigV4 signing: sha2, hmac, hex, presign", ["sha2::", "hmac", "hex::", "sign::",
                                                 "percent_encoding"]),
    ("HTTP/2 and gRPC: h2, hyper, tonic, prost, http", ["h2::", "hyper", "tonic", "prost",
                                                        "http::", "bytes::", "tower",
                                                        "axum", "httparse"]),
    ("tokio runtime, mio", ["tokio::", "mio::", "parking_lot", "std::sys", "crossbeam"]),
    ("storage-grants grant pipeline (other)", ["storage_grants"]),
    ("serde / json / time", ["serde", "time::", "chrono", "itoa", "ryu"]),
]


def perf_groups(path: str) -> None:
    groups = {name: 0.0 for name, _ in PERF_GROUPS}
    groups["other"] = 0.0
    top = {name: [] for name in groups}
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*?)\s*$", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
        text = f"{dso} {sym}"
        name = next((n for n, pats in PERF_GROUPS if any(p in text for p in pats)), "other")
        groups[name] += pct
        top[name].append((pct, sym[:90]))
    print("| where the server's CPU went (self time) | share | largest symbols |")
    print("|---|---:|---|")
    for name, pct in sorted(groups.items(), key=lambda kv: -kv[1]):
        if pct < 0.05:
            continue
        syms = "; ".join(f"`{s}` {p:.1f}%" for p, s in sorted(top[name], reverse=True)[:3])
        print(f"| {name} | {pct:.1f}% | {syms} |")


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    {"h2load": lambda: h2load(args[0]),
     "metrics": lambda: metrics(args[0]),
     "delta": lambda: delta(args[0], args[1], args[2]),
     "latency": lambda: latency(args),
     "soak": lambda: soak(args[0], args[1], args[2]),
     "table": lambda: table(args[0]),
     "perfgroups": lambda: perf_groups(args[0])}[cmd]()


if __name__ == "__main__":
    main()
