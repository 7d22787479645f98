#!/usr/bin/env python3
"""Tests of the storage-grants Helm chart and of the container image recipe.

Run by scripts/helm-test.sh, which installs the tools and passes their paths:

    test_chart.py --helm HELM --promtool PROMTOOL --validator KUBERNETES_VALIDATE \
                  --server SERVER_BINARY

Each test renders the chart with `helm template` (no cluster), then asserts on the
rendered objects, validates them against a current Kubernetes version's schemas, runs
the service's own `--check-config` on the config the chart renders, and checks the
alert rules with promtool. The last line is "N passed, N failed".
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1]
REPO = CHART.parents[1]
FULL_VALUES = CHART / "ci" / "full-values.yaml"
RELEASE, NAMESPACE = "sg", "grants"
FULLNAME = f"{RELEASE}-storage-grants"
# The Kubernetes version every object is validated against, and the one helm renders
# for (the chart needs >= 1.30: the preStop sleep action).
KUBE_VERSION = "1.37.0"
READINESS_SERVICE = "storagegrants.v1.GrantService"
NONROOT_UID = 65532

ARGS: argparse.Namespace
WORK: Path


# === helpers ===


class Failed(AssertionError):
    pass


def check(cond: bool, message: str) -> None:
    if not cond:
        raise Failed(message)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def write_values(name: str, values: dict) -> Path:
    path = WORK / f"{name}.values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def helm_template(*values: dict | Path, sets: tuple[str, ...] = (), ok: bool = True):
    """Renders the chart; returns (objects, stdout) on success or stderr on failure."""
    cmd = [ARGS.helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
           "--kube-version", KUBE_VERSION]
    for i, v in enumerate(values):
        path = v if isinstance(v, Path) else write_values(f"v{time.monotonic_ns()}-{i}", v)
        cmd += ["-f", str(path)]
    for s in sets:
        cmd += ["--set", s]
    p = run(cmd)
    if not ok:
        check(p.returncode != 0, f"helm template should have failed: {' '.join(cmd)}")
        return p.stderr
    check(p.returncode == 0, f"helm template failed: {p.stderr.strip()}")
    objs = [d for d in yaml.safe_load_all(p.stdout) if d]
    return objs, p.stdout


def find(objs, kind: str, name: str | None = None) -> dict:
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    check(len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}")
    return hits[0]


def deployment(objs) -> dict:
    return find(objs, "Deployment", FULLNAME)


def container(objs) -> dict:
    return deployment(objs)["spec"]["template"]["spec"]["containers"][0]


def config_toml(objs) -> str:
    return find(objs, "ConfigMap", f"{FULLNAME}-config")["data"]["config.toml"]


def full_values() -> dict:
    return yaml.safe_load(FULL_VALUES.read_text())


def object_list(objs) -> list[str]:
    return sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objs)


def seconds(d) -> int:
    m = re.fullmatch(r"(\d+)\s*(ms|s|m|h|d)?", str(d))
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": -(-n // 1000), "s": n, "m": n * 60, "h": n * 3600, "d": n * 86400}[unit]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certs(tls_dir: Path) -> None:
    """A CA and a server certificate signed by it, for the mTLS --check-config."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    ossl = shutil.which("openssl")
    check(ossl is not None, "openssl is needed to make test certificates")

    def o(*a):
        p = run([ossl, *a], cwd=tls_dir)
        check(p.returncode == 0, f"openssl {a[0]} failed: {p.stderr}")

    o("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test ca")
    o("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=storage-grants")
    (tls_dir / "ext.cnf").write_text("subjectAltName=DNS:storage-grants\n")
    o("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
      "-CAcreateserial", "-out", "tls.crt", "-days", "1", "-extfile", "ext.cnf")
    # PKCS#8, one of the key formats the service reads.
    o("pkcs8", "-topk8", "-nocrypt", "-in", "tls.key", "-out", "tls.key.p8")
    (tls_dir / "tls.key.p8").replace(tls_dir / "tls.key")


def pod_files(objs, root: Path) -> Path:
    """Lays out the files the pod would see under ROOT (the config and rules
    ConfigMaps, the TLS Secret, the service-account token), with every absolute path in
    the config moved under ROOT; returns the config file's path."""
    cfg_dir = root / "etc/storage-grants/config"
    rules_dir = root / "etc/storage-grants/rules"
    cfg_dir.mkdir(parents=True)
    rules_dir.mkdir(parents=True)
    text = config_toml(objs)
    for prefix in ("/etc/storage-grants/", "/var/run/secrets/kubernetes.io/serviceaccount/"):
        text = text.replace(f'"{prefix}', f'"{root}{prefix}')
    # The audit file's directory is a writable volume in the pod (extraVolumes);
    # --check-config checks that it exists.
    for audit_dir in {os.path.dirname(p) for p in re.findall(r'(?m)^file = "(/[^"]+)"', text)}:
        (root / audit_dir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        text = text.replace(f'"{audit_dir}/', f'"{root}{audit_dir}/')
    (cfg_dir / "config.toml").write_text(text)
    rules = [o for o in objs if o["kind"] == "ConfigMap" and "rules.toml" in o.get("data", {})]
    (rules_dir / "rules.toml").write_text(rules[0]["data"]["rules.toml"] if rules else "")
    if "/etc/storage-grants/tls/" in config_toml(objs):
        make_certs(root / "etc/storage-grants/tls")
    # The upload-keys Secret: one base64 key of 32 random bytes per file it names.
    for path in re.findall(r'"/etc/storage-grants/upload-keys/([^"]+)"', config_toml(objs)):
        key_file = root / "etc/storage-grants/upload-keys" / path
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    sa = root / "var/run/secrets/kubernetes.io/serviceaccount"
    sa.mkdir(parents=True)
    make_certs(sa / "pki")
    shutil.copy(sa / "pki/ca.crt", sa / "ca.crt")
    (sa / "token").write_text("not-a-real-token")
    return cfg_dir / "config.toml"


def clean_env(extra: dict | None = None) -> dict:
    """No STORAGE_GRANTS_* or AWS_* of the caller; no instance metadata; no HOME."""
    env = {"PATH": "/usr/bin:/bin", "AWS_EC2_METADATA_DISABLED": "true"}
    env.update(extra or {})
    return env


def check_config(objs, name: str, env: dict | None = None) -> str:
    root = WORK / f"pod-{name}"
    config = pod_files(objs, root)
    p = run([ARGS.server, "--check-config", "--config", str(config)], env=clean_env(env))
    check(p.returncode == 0,
          f"storage-grants --check-config refused the {name} config:\n{p.stdout}{p.stderr}\n"
          f"--- config.toml ---\n{config.read_text()}")
    return p.stdout.strip()


# === tests ===

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


@test
def helm_lint_default_and_full():
    for extra in ([], ["-f", str(FULL_VALUES)]):
        p = run([ARGS.helm, "lint", "--strict", str(CHART), *extra])
        check(p.returncode == 0, f"helm lint {' '.join(extra)}:\n{p.stdout}{p.stderr}")


@test
def rendered_objects_are_the_expected_ones():
    default, _ = helm_template()
    full, _ = helm_template(FULL_VALUES)
    base = [f"ConfigMap/{FULLNAME}-config", f"ConfigMap/{FULLNAME}-rules",
            f"Deployment/{FULLNAME}", f"PodDisruptionBudget/{FULLNAME}",
            f"Service/{FULLNAME}", f"ServiceAccount/{FULLNAME}"]
    check(object_list(default) == sorted(base), f"default render: {object_list(default)}")
    want_full = sorted(base + [f"HorizontalPodAutoscaler/{FULLNAME}", f"NetworkPolicy/{FULLNAME}",
                               f"PrometheusRule/{FULLNAME}", f"Service/{FULLNAME}-headless",
                               f"ServiceMonitor/{FULLNAME}"])
    check(object_list(full) == want_full, f"full render: {object_list(full)}")
    print("    default:", ", ".join(object_list(default)))
    print("    full:   ", ", ".join(object_list(full)))


@test
def every_object_passes_strict_kubernetes_schemas():
    renders = {"default": helm_template()[1], "full": helm_template(FULL_VALUES)[1]}
    for name, text in renders.items():
        path = WORK / f"{name}.rendered.yaml"
        path.write_text(text)
        p = run([ARGS.validator, "--strict", "-k", KUBE_VERSION, str(path)])
        out = p.stdout + p.stderr
        check(p.returncode == 0, f"kubernetes-validate refused the {name} render:\n{out}")
        for o in yaml.safe_load_all(text):
            if not o:
                continue
            ident = f"{o['kind'].lower()}/{o['metadata']['name']}"
            if o["apiVersion"].startswith("monitoring.coreos.com/"):
                # Prometheus Operator kinds: no schema in kubernetes-validate; their
                # content is checked below (promtool, ServiceMonitor assertions).
                continue
            check(f"passed for resource {ident} against version" in out,
                  f"{ident} of the {name} render was not validated:\n{out}")
        print(f"    {name}: " + "; ".join(l.split(" passed for resource ")[-1]
                                        for l in out.splitlines() if " passed for " in l))
    # The validator really is strict: one unknown field in a Deployment fails it.
    objs, _ = helm_template()
    broken = deployment(objs)
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpcc"] = {}
    path = WORK / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    p = run([ARGS.validator, "--strict", "-k", KUBE_VERSION, str(path)])
    check(p.returncode != 0, "kubernetes-validate --strict accepted an unknown field")


@test
def probes_ask_grpc_health_on_the_grpc_port():
    for name, objs in (("default", helm_template()[0]), ("full", helm_template(FULL_VALUES)[0])):
        c = container(objs)
        grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        svc = find(objs, "Service", FULLNAME)
        svc_port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
        check(svc_port["targetPort"] == "grpc" and svc_port["appProtocol"] == "grpc",
              f"{name}: Service grpc port {svc_port}")
        want = {"startupProbe": "", "livenessProbe": "", "readinessProbe": READINESS_SERVICE}
        for probe, service in want.items():
            g = c[probe].get("grpc")
            check(g is not None, f"{name}: {probe} is not a gRPC probe: {c[probe]}")
            check(g["port"] == grpc_port, f"{name}: {probe} port {g['port']} != {grpc_port}")
            check(g.get("service", "") == service,
                  f"{name}: {probe} asks for service {g.get('service')!r}, want {service!r}")


@test
def a_service_named_like_the_overrides_does_not_stop_the_pods():
    """Kubernetes adds STORAGE_GRANTS_SERVICE_HOST and the like to every pod when a
    Service is named storage-grants: the pods do not ask for them, and the service does
    not read them as config overrides."""
    objs = helm_template()[0]
    check(deployment(objs)["spec"]["template"]["spec"]["enableServiceLinks"] is False, "service links on")
    links = {"STORAGE_GRANTS_SERVICE_HOST": "10.96.0.11", "STORAGE_GRANTS_SERVICE_PORT": "50051",
             "STORAGE_GRANTS_SERVICE_PORT_GRPC": "50051", "STORAGE_GRANTS_PORT": "tcp://10.96.0.11:50051",
             "STORAGE_GRANTS_PORT_50051_TCP_ADDR": "10.96.0.11",
             "STORAGE_GRANTS_PROD_SERVICE_HOST": "10.96.0.12"}
    print("    with service links:", check_config(objs, "service-links", links))


@test
def pods_run_locked_down():
    for name, objs in (("default", helm_template()[0]), ("full", helm_template(FULL_VALUES)[0])):
        spec = deployment(objs)["spec"]["template"]["spec"]
        pod, c = spec["securityContext"], spec["containers"][0]
        sc = c["securityContext"]
        check(pod["runAsNonRoot"] is True and pod["runAsUser"] == NONROOT_UID, f"{name}: pod {pod}")
        check(pod["seccompProfile"]["type"] == "RuntimeDefault", f"{name}: pod seccomp")
        check(sc["runAsNonRoot"] is True, f"{name}: runAsNonRoot")
        check(sc["allowPrivilegeEscalation"] is False, f"{name}: allowPrivilegeEscalation")
        check(sc["readOnlyRootFilesystem"] is True, f"{name}: readOnlyRootFilesystem")
        check(sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"),
              f"{name}: capabilities {sc['capabilities']}")
        check(sc["seccompProfile"]["type"] == "RuntimeDefault", f"{name}: seccomp")
        for kind in ("requests", "limits"):
            check({"cpu", "memory"} <= set(c["resources"].get(kind, {})), f"{name}: resources.{kind}")
        keys = {t["topologyKey"] for t in spec["topologySpreadConstraints"]}
        check(keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, f"{name}: spread {keys}")
        # Drain: out of the endpoints first, then SIGTERM, then shutdown_grace.
        sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = seconds(re.search(r'^shutdown_grace = "([^"]+)"', config_toml(objs), re.M).group(1))
        check(spec["terminationGracePeriodSeconds"] > sleep + grace,
              f"{name}: terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} "
              f"<= preStop {sleep} + shutdown_grace {grace}")
        # The chart's own mounts; extraVolumeMounts are the operator's (the audit file
        # needs a writable one).
        extra = {m["name"] for m in (full_values() if name == "full" else {}).get("extraVolumeMounts", [])}
        for m in c["volumeMounts"]:
            if m["name"] in extra:
                continue
            check(m.get("readOnly") is True and "subPath" not in m,
                  f"{name}: mount {m} (read-only directory mounts, so rules reload in place)")
    # A too short explicit grace period is refused.
    err = helm_template({"drain": {"terminationGracePeriodSeconds": 20}}, ok=False)
    check("terminationGracePeriodSeconds" in err, err)
    # shutdown_grace 0 is no drain (not the default 20s): preStop and the margin only.
    spec = deployment(helm_template({"config": {"server": {"shutdown_grace": 0}}})[0])["spec"]["template"]["spec"]
    sleep = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    check(spec["terminationGracePeriodSeconds"] == sleep + 5, f"grace {spec['terminationGracePeriodSeconds']}")


@test
def no_dev_token_or_secret_in_any_configmap():
    canary = "canary-dev-token-" + os.urandom(8).hex()
    secret_values = {"devMode": {"enabled": True, "iUnderstandDevTokensAreInsecure": True,
                                 "existingSecret": "sg-dev-tokens"}}
    renders = {"default": helm_template()[0], "full": helm_template(FULL_VALUES)[0],
               "dev": helm_template(secret_values)[0]}
    patterns = [r"dev_tokens\s*=", r"\btoken\s*=", r"-----BEGIN", r"secret_access_key",
                r"AKIA[0-9A-Z]{16}", r"\[\[identity\.dev_tokens\]\]"]
    for name, objs in renders.items():
        for cm in (o for o in objs if o["kind"] == "ConfigMap"):
            text = json.dumps(cm["data"])
            for pat in patterns:
                check(not re.search(pat, text), f"{name}: ConfigMap {cm['metadata']['name']} matches {pat}")
        check(not any(o["kind"] == "Secret" for o in objs), f"{name}: the chart renders a Secret")
    # Dev mode: dev_mode in the file, the tokens from the Secret through the environment.
    dev = renders["dev"]
    check(re.search(r"^dev_mode = true$", config_toml(dev), re.M) is not None, "dev_mode not rendered")
    env = {e["name"]: e for e in container(dev).get("env", [])}
    ref = env["STORAGE_GRANTS_IDENTITY__DEV_TOKENS"]["valueFrom"]["secretKeyRef"]
    check(ref == {"name": "sg-dev-tokens", "key": "dev_tokens"}, f"dev tokens from {ref}")
    # Tokens put into the values directly never render: the schema refuses them.
    err = helm_template({"config": {"identity": {"dev_mode": True, "dev_tokens": [
        {"token": canary, "caller": "dev:a"}]}}}, ok=False)
    check("dev_tokens" in err or "dev_mode" in err, err)
    check(canary not in err, "the refusal echoes the token")


@test
def dev_mode_needs_the_loud_override():
    err = helm_template({"devMode": {"enabled": True, "existingSecret": "s"}}, ok=False)
    check("iUnderstandDevTokensAreInsecure" in err and "Never in production" in err,
          f"unclear refusal: {err}")
    err = helm_template({"devMode": {"enabled": True, "iUnderstandDevTokensAreInsecure": True}}, ok=False)
    check("devMode.existingSecret" in err, f"unclear refusal: {err}")


@test
def config_change_rolls_pods_and_rules_change_does_not():
    def checksum(objs):
        return deployment(objs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = helm_template()[0]
    check(checksum(base) == hashlib.sha256(config_toml(base).encode()).hexdigest(),
          "checksum/config is not the sha256 of config.toml")
    changed = helm_template({"config": {"grants": {"max_ttl": "30m"}}})[0]
    check(checksum(changed) != checksum(base), "a config change left checksum/config unchanged")
    rules = helm_template({"rules": {"items": [{"callers": ["svc:a"], "bucket": "demo",
                                                 "prefix": "a/", "actions": ["read"]}]}})[0]
    check(checksum(rules) == checksum(base), "a rules change rolls the pods (hot reload expected)")
    check(checksum(helm_template()[0]) == checksum(base), "checksum/config is not stable")


@test
def schema_refuses_wrong_types_and_unknown_keys():
    cases = [
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicaCounts": 2}, "replicaCounts"),
        ({"config": {"storage": {"regoin": "eu-west-1"}}}, "regoin"),
        ({"config": {"grants": {"max_ttl": "1 hour"}}}, "max_ttl"),
        ({"config": {"sts": {"reuse_fraction": 1.5}}}, "reuse_fraction"),
        ({"probes": {"type": "https"}}, "probes.type"),
        ({"config": {"limits": {"grants_burst": "many"}}}, "grants_burst"),
        ({"config": {"limits": {"sts_max_pending": 1.5}}}, "sts_max_pending"),
        ({"config": {"limits": {"grant_per_second": 10}}}, "grant_per_second"),
        ({"uploads": {"tokenKeys": {"existingSecret": "s", "keys": []}}}, "keys"),
        # A budget of 0 % would block every node drain.
        ({"podDisruptionBudget": {"maxUnavailable": "0%"}}, "maxUnavailable"),
    ]
    for values, word in cases:
        path = write_values(f"bad-{word}", values)
        err = helm_template(path, ok=False)
        check(word in err, f"{values}: refusal does not name {word}: {err}")
        lint = run([ARGS.helm, "lint", str(CHART), "-f", str(path)])
        check(lint.returncode != 0, f"helm lint accepted {values}")


@test
def planned_listeners_stay_out_of_the_config_until_enabled():
    default = config_toml(helm_template()[0])
    full = config_toml(helm_template(FULL_VALUES)[0])
    check("[http]" not in default and "[server.tls]" not in default, f"planned keys rendered:\n{default}")
    # The full install enables the gateway, never server TLS.
    check("[http]\nlisten = " in full and "[server.tls]" not in full, full)
    objs = helm_template({"http": {"enabled": True, "port": 8080}})[0]
    check('[http]\nlisten = "0.0.0.0:8080"' in config_toml(objs), config_toml(objs))
    ports = {p["name"]: p["port"] for p in find(objs, "Service", FULLNAME)["spec"]["ports"]}
    check(ports.get("http") == 8080, f"Service ports {ports}")
    objs = helm_template({"tls": {"existingSecret": "sg-tls", "server": {"enabled": True}},
                          "probes": {"type": "tcpSocket"}})[0]
    check("[server.tls]" in config_toml(objs), config_toml(objs))


@test
def plaintext_only_where_no_tls_and_the_service_accepts_each():
    # Default: 0.0.0.0 without TLS, which the service refuses unless told a mesh
    # terminates TLS in front of it.
    default = config_toml(helm_template()[0])
    check("\nallow_plaintext = true\n" in default, f"no allow_plaintext in:\n{default}")
    loopback = config_toml(helm_template({"service": {"listenHost": "127.0.0.1"}})[0])
    check("allow_plaintext" not in loopback, f"allow_plaintext on loopback:\n{loopback}")
    tls = helm_template({"tls": {"existingSecret": "sg-tls", "server": {"enabled": True}},
                         "probes": {"type": "tcpSocket"}})[0]
    text = config_toml(tls)
    check("allow_plaintext" not in text and "[server.tls]" in text, text)
    print("    server tls config:", check_config(tls, "server-tls"))
    timed = helm_template({"tls": {"existingSecret": "sg-tls", "server": {
        "enabled": True, "reloadInterval": "10s", "handshakeTimeout": "5s"}},
        "probes": {"type": "http"}})[0]
    text = config_toml(timed)
    check('reload_interval = "10s"\nhandshake_timeout = "5s"' in text, text)
    print("    server tls with timings:", check_config(timed, "server-tls-timed"))
    # Beyond the cluster (LoadBalancer, NodePort) without TLS: refused, unless the
    # load balancer terminates TLS.
    for kind in ("LoadBalancer", "NodePort"):
        err = helm_template({"service": {"type": kind}}, ok=False)
        check(f"service.type={kind}" in err and "tlsTerminatedInFront" in err, err)
        objs = helm_template({"service": {"type": kind, "tlsTerminatedInFront": True}})[0]
        check(find(objs, "Service", FULLNAME)["spec"]["type"] == kind, kind)
    objs = helm_template({"service": {"type": "LoadBalancer"}, "tls": {"existingSecret": "sg-tls",
                          "server": {"enabled": True}}, "probes": {"type": "tcpSocket"}})[0]
    check("allow_plaintext" not in config_toml(objs), "TLS behind a LoadBalancer")
    # Both are the chart's to set: the schema refuses them in config.server.
    for key in ("allow_plaintext", "tls"):
        err = helm_template({"config": {"server": {key: True}}}, ok=False)
        check(f"Additional property {key} is not allowed" in err, err)


@test
def tls_on_the_grpc_port_rules_out_native_grpc_probes():
    mtls = {"config": {"identity": {"mtls": {"trust_domains": ["prod.example"], "required": True}}}}
    err = helm_template(mtls, ok=False)
    check("tls.existingSecret" in err, err)
    with_secret = {**mtls, "tls": {"existingSecret": "sg-tls"}}
    err = helm_template(with_secret, ok=False)
    check("plaintext" in err and "tcpSocket" in err and "probes.type=http" in err, err)
    # HTTP probes on the plaintext metrics port follow readiness whatever gRPC speaks.
    c = container(helm_template(with_secret, {"probes": {"type": "http"}})[0])
    check(c["readinessProbe"]["httpGet"] == {"port": "metrics", "path": "/readyz"},
          f"readiness {c['readinessProbe']}")
    check(all(c[p]["httpGet"] == {"port": "metrics", "path": "/livez"}
              for p in ("startupProbe", "livenessProbe")), "startup and liveness on /livez")
    err = helm_template(with_secret, {"probes": {"type": "http"}, "metrics": {"enabled": False}},
                        ok=False)
    check("metrics.enabled" in err, err)
    objs = helm_template(with_secret, {"probes": {"type": "tcpSocket"}})[0]
    c = container(objs)
    check(all(c[p]["tcpSocket"]["port"] == "grpc" for p in ("livenessProbe", "readinessProbe")), "tcp probes")
    vol = next(v for v in deployment(objs)["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    check(vol["secret"]["secretName"] == "sg-tls", f"tls volume {vol}")
    objs = helm_template(with_secret, {"probes": {"type": "exec", "execCommand": [
        "/bin/grpc_health_probe", "-addr=:50051", "-tls", "-tls-no-verify", "-service={service}"]}})[0]
    check(container(objs)["readinessProbe"]["exec"]["command"][-1] == f"-service={READINESS_SERVICE}",
          "exec readiness probe does not name the readiness service")
    print("    mtls config:", check_config(objs, "mtls"))
    # Server TLS on top of mTLS: the service refuses both, so the chart does first.
    err = helm_template(with_secret, {"probes": {"type": "tcpSocket"}, "tls": {"existingSecret": "sg-tls",
                        "server": {"enabled": True}}}, ok=False)
    check("tls.server.enabled and config.identity.mtls" in err, err)


@test
def notes_name_the_gateway_and_warn_without_allowed_origins():
    check("HTTP gateway" not in notes(), "a gateway line while http.enabled is off")
    bare = notes({"http": {"enabled": True}})
    check(f"HTTP gateway: http://{FULLNAME}.{NAMESPACE}.svc:8080" in bare, bare)
    check("No config.http.allowed_origins" in bare, bare)
    set_ = notes({"http": {"enabled": True},
                  "config": {"http": {"allowed_origins": ["https://app.example.com"]}}})
    check("HTTP gateway: http://" in set_ and "No config.http.allowed_origins" not in set_, set_)
    tls = notes({"http": {"enabled": True}, "tls": {"existingSecret": "sg-tls", "server": {"enabled": True}},
                 "probes": {"type": "tcpSocket"}})
    check(f"HTTP gateway: https://{FULLNAME}." in tls, tls)
    # The default install: no identity source, plaintext gRPC; both said.
    default = notes()
    check("No identity source" in default and "speaks plaintext" in default, default)
    check("STORAGE_GRANTS_GRANTS__RULES_FILE=rules.toml" in default, default)
    check("No identity source" not in notes(FULL_VALUES), "identity warning with a JWT source")
    check("speaks plaintext" not in tls, tls)


@test
def the_gateway_speaks_tls_whenever_the_grpc_port_does_and_both_say_so():
    def http_port(objs):
        return next(p for p in find(objs, "Service", FULLNAME)["spec"]["ports"] if p["name"] == "http")
    plain = helm_template({"http": {"enabled": True}})[0]
    check(http_port(plain)["appProtocol"] == "http", f"{http_port(plain)}")
    # Beside mTLS the gateway presents the mTLS server certificate: the service accepts
    # a gateway on the pod network without allow_plaintext.
    mtls = helm_template({"config": {"identity": {"mtls": {"trust_domains": ["prod.example"]}}},
                          "tls": {"existingSecret": "sg-tls"}, "probes": {"type": "tcpSocket"},
                          "http": {"enabled": True}})[0]
    check(http_port(mtls)["appProtocol"] == "https", f"{http_port(mtls)}")
    text = config_toml(mtls)
    check("allow_plaintext" not in text and 'listen = "0.0.0.0:8080"' in text, text)
    print("    mtls + gateway:", check_config(mtls, "mtls-gateway"))
    server_tls = helm_template({"tls": {"existingSecret": "sg-tls", "server": {"enabled": True}},
                                "probes": {"type": "tcpSocket"}, "http": {"enabled": True},
                                "service": {"headless": True}})[0]
    check(http_port(server_tls)["appProtocol"] == "https", f"{http_port(server_tls)}")
    # The gRPC port too: a mesh must not parse TLS as cleartext HTTP/2.
    for objs, want in ((plain, "grpc"), (mtls, "https"), (server_tls, "https")):
        for svc in (o for o in objs if o["kind"] == "Service"):
            port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
            check(port["appProtocol"] == want, f"{svc['metadata']['name']}: {port}")
    print("    server tls + gateway:", check_config(server_tls, "server-tls-gateway"))


@test
def service_accepts_the_rendered_configs():
    for name, values in (("default", ()), ("full", (FULL_VALUES,))):
        print(f"    {name}:", check_config(helm_template(*values)[0], name))
    dev = helm_template({"devMode": {"enabled": True, "iUnderstandDevTokensAreInsecure": True,
                                     "existingSecret": "sg-dev-tokens"}})[0]
    # What the Secret's dev_tokens key holds, as the pod gets it.
    tokens = '[{ token = "dev-' + os.urandom(8).hex() + '", caller = "dev:demo" }]'
    print("    dev:", check_config(dev, "dev", {"STORAGE_GRANTS_IDENTITY__DEV_TOKENS": tokens}))


@test
def rule_items_take_every_key_of_the_services_rules_file():
    # The service names the keys a rule may have when it refuses an unknown one.
    work = WORK / "rule-keys"
    work.mkdir()
    (work / "config.toml").write_text("")
    (work / "rules.toml").write_text(
        '[[rules]]\ncallers = ["dev:a"]\nbucket = "demo"\nprefix = "x/"\n'
        'actions = ["read"]\nnot_a_rule_key = 1\n')
    p = run([ARGS.server, "--check-config", "--config", str(work / "config.toml")],
            env=clean_env(), cwd=work)
    check(p.returncode == 2 and "expected one of" in p.stderr,
          f"an unknown rule key was not refused with the valid ones:\n{p.stdout}{p.stderr}")
    service_keys = set(re.findall(r"`([a-z_]+)`", p.stderr.split("expected one of", 1)[1]))
    schema = json.loads((CHART / "values.schema.json").read_text())
    chart_keys = set(schema["properties"]["rules"]["properties"]["items"]["items"]["properties"])
    check(chart_keys == service_keys,
          f"rules.items keys differ from the service's: only in the chart "
          f"{sorted(chart_keys - service_keys)}, only in the service "
          f"{sorted(service_keys - chart_keys)}")
    readme = (CHART / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `rules.items`"))
    missing = sorted(k for k in service_keys if f"`{k}`" not in row)
    check(not missing, f"the chart README's rules.items row leaves out {missing}")
    # Values the service would refuse are refused at install, or the chart and the
    # service would disagree about what a rule means.
    rule = {"callers": ["dev:a"], "bucket": "demo", "prefix": "x/", "actions": ["write"]}
    for bad in ({"content_types": []}, {"grants_per_second": 1e-9},
                {"grants_per_second": 0}, {"max_object_size": 2**63 - 1}):
        err = helm_template({"rules": {"items": [{**rule, **bad}]}}, ok=False)
        check("rules.items.0" in err, f"{bad} was not refused by the schema: {err}")
    # And each renders into a rules file the service takes (the full values use them).
    rules = [o for o in helm_template(FULL_VALUES)[0]
             if o["kind"] == "ConfigMap" and "rules.toml" in o.get("data", {})]
    text = rules[0]["data"]["rules.toml"]
    for line in ('content_types = ["image/png", "image/jpeg"]', "max_object_size = 5242880",
                 "grants_per_second = 2000", "grants_burst = 4000"):
        check(line in text, f"{line!r} not in the rendered rules:\n{text}")


@test
def the_readmes_pre_upgrade_check_runs_away_from_the_pod():
    # As the chart README says: the ConfigMaps rendered into a directory, the rules
    # file beside the config, --skip-files for the files only the pod has.
    def recipe(name: str, *values, sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        work = WORK / f"recipe-{name}"
        work.mkdir()
        for obj in helm_template(*values, sets=sets)[0]:
            if obj["kind"] == "ConfigMap":
                for file, text in (obj.get("data") or {}).items():
                    if file in ("config.toml", "rules.toml"):
                        (work / file).write_text(text)
        return run([ARGS.server, "--check-config", "--skip-files", "--config", "config.toml"],
                   env=clean_env({"STORAGE_GRANTS_GRANTS__RULES_FILE": "rules.toml"}), cwd=work)

    p = recipe("full", FULL_VALUES)
    check(p.returncode == 0 and "--skip-files" in p.stdout and "3 rule(s)" in p.stdout,
          f"the full install's rendered config was refused away from the pod:\n{p.stdout}{p.stderr}")
    print("    full:", p.stdout.strip())
    # A value within the schema that the service refuses is caught before the upgrade.
    p = recipe("refused", FULL_VALUES, sets=("config.grants.default_ttl=2h",))
    check(p.returncode == 2 and "grants.default_ttl" in p.stderr,
          f"a default_ttl over max_ttl was not refused:\n{p.stdout}{p.stderr}")


def http_table(text: str) -> str:
    """The [http] table of a rendered config.toml, header included."""
    table = text.split("\n[http]\n", 1)
    check(len(table) == 2, f"no [http] table in:\n{text}")
    return "[http]\n" + table[1].split("\n[", 1)[0].strip() + "\n"


GATEWAY = {
    "allowed_origins": ["https://app.example.com", "http://localhost:3000"],
    "session_cookie": "app_session",
    "login_url": "https://app.example.com/login",
    "link_ttl": "2m",
    "header_read_timeout": "15s",
    "upload_bucket": "uploads",
}


@test
def http_gateway_keys_render_after_listen_while_enabled():
    objs = helm_template({"http": {"enabled": True, "port": 8081}, "config": {"http": GATEWAY}})[0]
    want = ('[http]\n'
            'listen = "0.0.0.0:8081"\n'
            'allowed_origins = ["https://app.example.com", "http://localhost:3000"]\n'
            'header_read_timeout = "15s"\n'
            'link_ttl = "2m"\n'
            'login_url = "https://app.example.com/login"\n'
            'session_cookie = "app_session"\n'
            'upload_bucket = "uploads"\n')
    check(http_table(config_toml(objs)) == want, http_table(config_toml(objs)))
    print("    gateway:", check_config(objs, "gateway"))
    # The full install sets every key: each is rendered as written.
    full = http_table(config_toml(helm_template(FULL_VALUES)[0]))
    check(full.startswith('[http]\nlisten = "0.0.0.0:8080"\n'), full)
    for key, value in full_values()["config"]["http"].items():
        line = f"{key} = {json.dumps(value, separators=(', ', ': '))}\n"
        check(line in full, f"config.http.{key}: no {line!r} in:\n{full}")


@test
def http_gateway_keys_are_refused_while_the_gateway_is_off():
    # Nothing would read them: an error instead of a setting silently ignored.
    for key in GATEWAY:
        err = helm_template({"config": {"http": {key: GATEWAY[key]}}}, ok=False)
        check(f"config.http.{key}" in err and "http.enabled=true" in err, f"{key}: {err}")
    err = helm_template({"http": {"enabled": False}, "config": {"http": GATEWAY}}, ok=False)
    check("config.http.allowed_origins, config.http.header_read_timeout" in err, err)
    # listen is the chart's, from http.port, whether the gateway is on or off.
    for enabled in (True, False):
        err = helm_template({"http": {"enabled": enabled}, "config": {"http": {"listen": "0.0.0.0:9000"}}},
                            ok=False)
        check("config.http.listen" in err and "http.port" in err, err)
    # gRPC-Web reads allowed_origins for its CORS without the gateway: kept, and the
    # gateway stays off (no listen).
    web = {"config": {"server": {"grpc_web": True}, "http": {"allowed_origins": ["https://app.example.com"]}}}
    objs = helm_template(web)[0]
    table = http_table(config_toml(objs))
    check("listen" not in table.replace("# No listen", "")
          and 'allowed_origins = ["https://app.example.com"]\n' in table, table)
    check(all(p["name"] != "http" for p in container(objs)["ports"]), "an http port while the gateway is off")
    print("    grpc-web only:", check_config(objs, "grpc-web-only"))
    err = helm_template(web, {"config": {"http": {"login_url": "/login"}}}, ok=False)
    check("error calling fail: config.http.login_url: read by the HTTP gateway" in err, err)


@test
def schema_checks_http_origins_as_the_service_does():
    """The schema and the service agree on every origin: what one refuses, so does the
    other (the service's verdict from --check-config on the rendered config)."""
    objs = helm_template({"http": {"enabled": True}, "config": {"http": {"allowed_origins": ["https://x.example"]}}})[0]
    origins = {
        "https://app.example.com": True,
        "http://localhost:3000": True,
        "https://[::1]:8443": True,
        "https://app.example.com/": False,
        "https://app.example.com/app": False,
        "https://app.example.com?x=1": False,
        "https://*.example.com": False,
        "https://user@app.example.com": False,
        "app.example.com": False,
        "ftp://app.example.com": False,
        "HTTPS://app.example.com": False,
        "https://": False,
    }
    for origin, valid in origins.items():
        values = {"http": {"enabled": True}, "config": {"http": {"allowed_origins": [origin]}}}
        if valid:
            helm_template(values)
        else:
            err = helm_template(values, ok=False)
            check("config.http.allowed_origins.0: Does not match pattern" in err, f"{origin}: {err}")
        root = WORK / f"origin-{hashlib.sha256(origin.encode()).hexdigest()[:12]}"
        config = pod_files(objs, root)
        config.write_text(config.read_text().replace('"https://x.example"', json.dumps(origin)))
        p = run([ARGS.server, "--check-config", "--config", str(config)], env=clean_env())
        check((p.returncode == 0) == valid,
              f"{origin}: the schema says {'valid' if valid else 'invalid'}, the service exits "
              f"{p.returncode}:\n{p.stderr}")
    cases = [
        ({"origins": ["https://app.example.com"]}, "Additional property origins is not allowed"),
        ({"allowed_origins": ["https://a.example", "https://a.example"]}, "allowed_origins"),
        ({"allowed_origins": "https://a.example"}, "allowed_origins"),
        ({"session_cookie": "my session"}, "session_cookie"),
        ({"login_url": "login.html"}, "login_url"),
        ({"link_ttl": "a minute"}, "link_ttl"),
        ({"header_read_timeout": "10 seconds"}, "header_read_timeout"),
        ({"upload_bucket": "Uploads_2026"}, "upload_bucket"),
    ]
    for http, word in cases:
        err = helm_template({"http": {"enabled": True}, "config": {"http": http}}, ok=False)
        check(word in err and "config.http" in err, f"{http}: refusal does not name {word}: {err}")


@test
def connections_are_sent_away_at_an_age_unless_turned_off():
    def server_table(objs) -> str:
        return config_toml(objs).split("\n[server]\n", 1)[1].split("\n[", 1)[0]
    default = server_table(helm_template()[0])
    check('\nmax_connection_age = "10m"\n' in f"\n{default}\n", f"no max_connection_age in [server]:\n{default}")
    off = server_table(helm_template({"config": {"server": {"max_connection_age": None}}})[0])
    check("max_connection_age" not in off, f"max_connection_age rendered though null:\n{off}")
    set_ = helm_template({"config": {"server": {"max_connection_age": "30m"}}})[0]
    check('max_connection_age = "30m"' in server_table(set_), server_table(set_))
    check_config(set_, "max_connection_age 30m")
    err = helm_template({"config": {"server": {"max_connection_age": "soon"}}}, ok=False)
    check("max_connection_age" in err, err)


@test
def grpc_web_and_the_audit_file_render():
    volume = {"extraVolumes": [{"name": "audit", "emptyDir": {}}],
              "extraVolumeMounts": [{"name": "audit", "mountPath": "/var/log/storage-grants/"}]}
    text = config_toml(helm_template({"config": {"server": {"grpc_web": True},
                                                 "audit": {"file": "/var/log/storage-grants/audit.jsonl"}},
                                      **volume})[0])
    server = text.split("\n[server]\n", 1)[1].split("\n[", 1)[0]
    check("\ngrpc_web = true\n" in f"\n{server}", f"grpc_web not in [server]:\n{text}")
    check('\n[audit]\nfile = "/var/log/storage-grants/audit.jsonl"\n' in text, f"no [audit] in:\n{text}")
    check("[audit]" not in config_toml(helm_template()[0]), "[audit] rendered though unset")
    # The full install writes its audit file on a writable volume of its own.
    objs = helm_template(FULL_VALUES)[0]
    audit = full_values()["config"]["audit"]["file"]
    check(f'file = "{audit}"' in config_toml(objs), config_toml(objs))
    mounts = [m for m in container(objs)["volumeMounts"] if audit.startswith(m["mountPath"].rstrip("/") + "/")]
    check(len(mounts) == 1 and not mounts[0].get("readOnly"), f"no writable mount for {audit}: {mounts}")
    # Off a writable mount the service could not open it at start: the render says so.
    audit_only = {"config": {"audit": {"file": "/var/log/storage-grants/audit.jsonl"}}}
    read_only = {**volume, "extraVolumeMounts": [{**volume["extraVolumeMounts"][0], "readOnly": True}]}
    sibling = {**volume, "extraVolumeMounts": [{"name": "audit", "mountPath": "/var/log/storage"}]}
    for values in ({}, read_only, sibling):
        err = helm_template(audit_only, values, ok=False)
        check("config.audit.file" in err and "extraVolumeMounts" in err, f"{values}: {err}")
    for values, word in (({"config": {"server": {"grpc_web": "yes"}}}, "grpc_web"),
                         ({"config": {"audit": {"file": "audit.jsonl"}}}, "file"),
                         ({"config": {"audit": {"path": "/var/log/a.jsonl"}}}, "Additional property path")):
        err = helm_template(values, ok=False)
        check(word in err, f"{values}: {err}")


def notes(*values: dict | Path) -> str:
    """NOTES.txt as `helm install` would print it (which needs a cluster): a copy of the
    chart renders it through tpl into a ConfigMap."""
    chart = WORK / f"notes-chart-{time.monotonic_ns()}"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("tests", "ci"))
    shutil.copy(CHART / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        "  notes: {{ tpl (.Files.Get \"notes.txt\") . | toJson }}\n")
    cmd = [ARGS.helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE,
           "--kube-version", KUBE_VERSION]
    for i, v in enumerate(values):
        path = v if isinstance(v, Path) else write_values(f"n{time.monotonic_ns()}-{i}", v)
        cmd += ["-f", str(path)]
    p = run(cmd)
    check(p.returncode == 0, f"helm template (notes) failed: {p.stderr.strip()}")
    objs = [d for d in yaml.safe_load_all(p.stdout) if d]
    return find(objs, "ConfigMap", "notes")["data"]["notes"]


@test
def limits_render_as_their_own_table():
    check("[limits]" not in config_toml(helm_template()[0]), "[limits] rendered though unset")
    text = config_toml(helm_template(FULL_VALUES)[0])
    limits = full_values()["config"]["limits"]
    table = text.split("\n[limits]\n", 1)
    check(len(table) == 2, f"no [limits] table in:\n{text}")
    body = table[1].split("\n[", 1)[0]
    for key, value in limits.items():
        check(f"\n{key} = {value}\n" in f"\n{body}", f"limits.{key} = {value} not rendered:\n{body}")
    # --check-config on the full render (service_accepts_the_rendered_configs) covers
    # these keys; a budget the service refuses is refused by the schema first.
    err = helm_template({"config": {"limits": {"sts_misses_burst": 0.5}}}, ok=False)
    check("sts_misses_burst" in err, err)


@test
def upload_token_keys_come_from_a_secret_shared_by_every_replica():
    default = helm_template()[0]
    check("[uploads]" not in config_toml(default), "[uploads] rendered without a Secret")
    check(all(v["name"] != "upload-keys" for v in deployment(default)["spec"]["template"]["spec"]["volumes"]),
          "upload-keys volume without a Secret")
    on = {"uploads": {"tokenKeys": {"existingSecret": "sg-upload-keys", "keys": ["current", "previous"]}}}
    objs = helm_template(FULL_VALUES, on)[0]
    text = config_toml(objs)
    want = ('[uploads]\n', 'token_key_files = ["/etc/storage-grants/upload-keys/current", '
            '"/etc/storage-grants/upload-keys/previous"]\n')
    check(all(w in text for w in want), f"no token_key_files in:\n{text}")
    check("token_keys =" not in text, "inline token keys in the config")
    spec = deployment(objs)["spec"]["template"]["spec"]
    vol = next(v for v in spec["volumes"] if v["name"] == "upload-keys")
    check(vol["secret"]["secretName"] == "sg-upload-keys", f"upload-keys volume {vol}")
    check([i["key"] for i in vol["secret"]["items"]] == ["current", "previous"], f"items {vol}")
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "upload-keys")
    check(mount["mountPath"] == "/etc/storage-grants/upload-keys" and mount["readOnly"] is True,
          f"upload-keys mount {mount}")
    path = WORK / "upload-keys.rendered.yaml"
    path.write_text(yaml.safe_dump(deployment(objs)))
    p = run([ARGS.validator, "--strict", "-k", KUBE_VERSION, str(path)])
    check(p.returncode == 0, f"kubernetes-validate refused the upload-keys Deployment:\n{p.stdout}{p.stderr}")
    # A rotation (the keys list) changes the config, so the pods roll.
    one = helm_template(FULL_VALUES, {"uploads": {"tokenKeys": {"existingSecret": "sg-upload-keys"}}})[0]
    check('token_key_files = ["/etc/storage-grants/upload-keys/current"]\n' in config_toml(one),
          config_toml(one))
    annotation = lambda o: deployment(o)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    check(annotation(one) != annotation(objs), "changing the keys does not roll the pods")
    # The service accepts the rendered files with valid keys where the pod finds them.
    print("    upload keys:", check_config(objs, "upload-keys"))
    root = WORK / "pod-upload-keys" / "etc/storage-grants/upload-keys"
    keys = [(root / k).read_text().strip() for k in ("current", "previous")]
    # ...and no key material reaches a ConfigMap: keys are never values.
    for o in objs:
        if o["kind"] == "ConfigMap":
            blob = json.dumps(o)
            check(not any(k in blob for k in keys), f"key material in ConfigMap {o['metadata']['name']}")
            check("token_keys" not in blob, f"token_keys in ConfigMap {o['metadata']['name']}")
    # The chart owns [uploads]: the schema refuses keys inline in config.
    for bad in ({"token_keys": ["a2V5"]}, {"token_key_files": ["/keys/k"]}):
        err = helm_template({"config": {"uploads": bad}}, ok=False)
        check("Additional property uploads is not allowed" in err, err)
    # Several replicas without shared keys: a warning, not a failure.
    for values in ((), (FULL_VALUES,), ({"replicaCount": 1, "autoscaling": {"enabled": True}},)):
        check("multipart upload" in notes(*values), f"no multipart warning for {values}")
    for values in (({"replicaCount": 1},), (FULL_VALUES, on)):
        check("multipart upload" not in notes(*values), f"multipart warning for {values}")


@test
def irsa_jwt_and_network_policy_of_the_full_install():
    objs = helm_template(FULL_VALUES)[0]
    sa = find(objs, "ServiceAccount", FULLNAME)
    check(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
          == full_values()["serviceAccount"]["irsaRoleArn"], "IRSA annotation")
    # The JWKS comes from the API server with the pod's own token: mounted.
    check(deployment(objs)["spec"]["template"]["spec"]["automountServiceAccountToken"] is True,
          "the API token is not mounted though jwks_token_file needs it")
    check(deployment(helm_template()[0])["spec"]["template"]["spec"]["automountServiceAccountToken"] is False,
          "the default install mounts an API token it does not use")
    np = find(objs, "NetworkPolicy", FULLNAME)["spec"]
    grpc_rule = next(r for r in np["ingress"] if r["ports"][0]["port"] == "grpc")
    names = grpc_rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    check(names[0] == NAMESPACE and set(full_values()["networkPolicy"]["allowedNamespaces"]) <= set(names),
          f"gRPC ingress namespaces {names}")
    check(any(p["port"] == 53 for r in np["egress"] for p in r.get("ports", [])), "no DNS egress")
    check(any("169.254.169.254/32" in t["ipBlock"].get("except", [])
              for r in np["egress"] for t in r.get("to", []) if "ipBlock" in t), "metadata not excluded")
    sm = find(objs, "ServiceMonitor", FULLNAME)["spec"]
    svc = find(objs, "Service", FULLNAME)
    check(sm["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}, "ServiceMonitor port")
    check(sm["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), "ServiceMonitor selector")
    check("replicas" not in deployment(objs)["spec"], "replicas set while the HPA owns them")


@test
def credentials_proxy_snippet_is_a_valid_pod_spec_for_apps():
    """credentialsProxy.enabled renders, for the apps' pods, a pod-spec snippet: a valid
    Pod once an app container is filled in, the sidecar's arguments are ones the binary
    accepts, and the token reaches the sidecar only."""
    name = f"{FULLNAME}-credentials-proxy"
    check(name not in " ".join(object_list(helm_template(FULL_VALUES)[0])), "rendered while disabled")
    on = {"credentialsProxy": {"enabled": True, "port": 9911, "bucket": "uploads", "prefix": "tenants/etl/",
                               "access": "read-write", "list": True}}
    objs = helm_template(FULL_VALUES, on)[0]
    cm = find(objs, "ConfigMap", name)
    uri = cm["data"]["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
    check(cm["data"].get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") == "/var/run/storage-grants-proxy/token",
          f"ConfigMap keys {sorted(cm['data'])}")
    check(uri == "http://127.0.0.1:9911/v1/credentials/uploads/tenants/etl/?access=read-write&list=true", uri)
    spec = yaml.safe_load(cm["data"]["pod-spec-snippet.yaml"])
    sidecar = spec["initContainers"][0]
    check(sidecar["restartPolicy"] == "Always", "not a native sidecar")
    args = sidecar["args"]
    check(args[:3] == ["credentials-proxy", "--endpoint", f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:50051"],
          f"sidecar args {args}")
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    app_token = "/var/run/storage-grants-proxy/token"
    check(env == {"AWS_CONTAINER_CREDENTIALS_FULL_URI": uri, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": app_token},
          f"app env {env}")
    check(dict(zip(args[1::2], args[2::2])).get("--authorization-token-file") == app_token, f"sidecar args {args}")
    token = spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    check(token["audience"] in full_values()["config"]["identity"]["jwt"]["audiences"], f"audience {token}")
    # The app mounts the proxy's volume (read only) and never the caller's token.
    app_mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    check(set(app_mounts) == {"storage-grants-proxy"} and app_mounts["storage-grants-proxy"]["readOnly"],
          f"app mounts {app_mounts}")
    sidecar_mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    check(not sidecar_mounts["storage-grants-proxy"].get("readOnly"), "the sidecar cannot write the app's token")
    check(any(v["name"] == "storage-grants-proxy" and "emptyDir" in v for v in spec["volumes"]), "no shared volume")
    # A Pod made of the snippet and an app container passes the strict schemas.
    spec["containers"][0]["image"] = "registry.example.com/app:1"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": "apps"}, "spec": spec}
    path = WORK / "app-pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    p = run([ARGS.validator, "--strict", "-k", KUBE_VERSION, str(path)])
    check(p.returncode == 0, f"kubernetes-validate refused the app pod:\n{p.stdout}{p.stderr}")
    # The binary accepts the rendered arguments (endpoint, port and token file moved to
    # this machine): it listens on loopback and answers its health route.
    port = free_port()
    token_file = WORK / "proxy-token"
    token_file.write_text("not-a-real-token")
    app_token_file = WORK / "proxy-app-token"
    app_token_file.unlink(missing_ok=True)
    local = dict(zip(args[1::2], args[2::2]))
    local.update({"--endpoint": "http://127.0.0.1:9", "--listen": f"127.0.0.1:{port}",
                  "--token-file": str(token_file), "--authorization-token-file": str(app_token_file)})
    cmd = [ARGS.server, args[0]] + [x for kv in local.items() for x in kv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    try:
        deadline = time.monotonic() + 10
        answer = None
        while time.monotonic() < deadline and proc.poll() is None and answer is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    answer = c.recv(4096).decode(errors="replace")
            except OSError:
                time.sleep(0.1)
        check(answer is not None and " 200 " in answer.splitlines()[0],
              f"credentials-proxy with the rendered args did not answer /healthz: {answer!r}")
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    check("not-a-real-token" not in out, "the proxy logged its token")
    app_token = app_token_file.read_text()
    check(len(app_token) == 64 and app_token not in out, "the proxy wrote no app token, or logged it")
    # Without a JWT source the sidecar's token could not be verified: refused.
    err = helm_template({"credentialsProxy": {"enabled": True}}, ok=False)
    check("config.identity.jwt" in err, err)
    err = helm_template(FULL_VALUES, {"credentialsProxy": {"enabled": True, "tokenAudience": "other"}}, ok=False)
    check("tokenAudience" in err, err)
    mtls = {"config": {"identity": {"mtls": {"trust_domains": ["prod.example"], "required": True}}},
            "tls": {"existingSecret": "sg-tls"}, "probes": {"type": "tcpSocket"}}
    err = helm_template(FULL_VALUES, mtls, {"credentialsProxy": {"enabled": True}}, ok=False)
    check("client certificate" in err, err)
    # Unset, mtls.required is the service's default: true, so refused too.
    unset = {**mtls, "config": {"identity": {"mtls": {"trust_domains": ["prod.example"]}}}}
    err = helm_template(FULL_VALUES, unset, {"credentialsProxy": {"enabled": True}}, ok=False)
    check("client certificate" in err, err)
    optional = {**mtls, "config": {"identity": {"mtls": {"trust_domains": ["prod.example"], "required": False}}}}
    helm_template(FULL_VALUES, optional, {"credentialsProxy": {"enabled": True}})
    # An app pod's own user does not reach the sidecar twice.
    objs = helm_template(FULL_VALUES, on, {"securityContext": {"runAsUser": 1000}})[0]
    snippet = find(objs, "ConfigMap", name)["data"]["pod-spec-snippet.yaml"]
    check(snippet.count("runAsUser:") == 1, snippet)
    print(f"    snippet: {len(spec['initContainers'])} sidecar, {len(spec['volumes'])} volume; {uri}")


@test
def alert_rules_pass_promtool():
    objs = helm_template(FULL_VALUES)[0]
    rule = find(objs, "PrometheusRule", FULLNAME)
    rules_file = WORK / "storage-grants-rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    check({"StorageGrantsStsErrors", "StorageGrantsRulesReloadRefused", "StorageGrantsNotReady",
           "StorageGrantsSigningCredentialsExpiring", "StorageGrantsConnectionsRefused",
           "StorageGrantsCallersOverBudget", "StorageGrantsTlsReloadRefused",
           "StorageGrantsCertificateExpiring", "StorageGrantsLogBehind"} <= alerts,
          f"alerts {alerts}")
    p = run([ARGS.promtool, "check", "rules", str(rules_file)])
    check(p.returncode == 0, f"promtool check rules:\n{p.stdout}{p.stderr}")
    # Unit tests of the alerts: series in, alerts out.
    test_file = WORK / "alerts_test.yaml"
    test_file.write_text((CHART / "tests" / "alerts_test.yaml").read_text())
    p = run([ARGS.promtool, "test", "rules", str(test_file)], cwd=WORK)
    check(p.returncode == 0, f"promtool test rules:\n{p.stdout}{p.stderr}")
    print("    " + " ".join(p.stdout.split()))


@test
def dockerfile_builds_locked_and_runs_nonroot_without_a_shell():
    text = (REPO / "Dockerfile").read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    stages = [i for i, l in enumerate(lines) if l.upper().startswith("FROM ")]
    check(len(stages) >= 2, "not a multi-stage build")
    check(any("cargo build --release --locked" in l for l in lines), "no cargo build --release --locked")
    final = lines[stages[-1]:]
    base = final[0].split()[1]
    check(re.search(r"distroless|-slim", base) is not None, f"final base {base} is neither distroless nor slim")
    check(not any(l.upper().startswith(("RUN ", "SHELL ")) for l in final),
          "the final stage runs commands (needs a shell)")
    users = [l.split()[1] for l in final if l.upper().startswith("USER ")]
    check(users and users[-1].split(":")[0] not in ("0", "root"), f"final USER {users}")
    check(users[-1].split(":")[0] == str(NONROOT_UID), f"USER {users[-1]} is not the chart's runAsUser {NONROOT_UID}")
    entry = [l for l in final if l.upper().startswith("ENTRYPOINT ")]
    check(entry and json.loads(entry[-1].split(None, 1)[1]) == ["/usr/local/bin/storage-grants"],
          f"ENTRYPOINT {entry} (exec form, no shell)")
    cmd = json.loads(next(l for l in final if l.upper().startswith("CMD ")).split(None, 1)[1])
    chart_args = container(helm_template()[0])["args"]
    check(cmd == chart_args, f"image CMD {cmd} differs from the chart's args {chart_args}")
    ignore = (REPO / ".dockerignore").read_text().split()
    check("target/" in ignore and ".git/" in ignore, ".dockerignore lets target/ or .git/ in")


@test
def binary_serves_health_as_the_image_runs_it():
    """The release binary as the image and the chart run it: an unprivileged user, no
    HOME, a working directory it cannot write, the config the chart renders read from a
    read-only directory; the health service answers the probes' two service names."""
    if os.geteuid() != 0:
        print("    skipped: needs root to switch to the image's user")
        return
    setpriv = shutil.which("setpriv")
    check(setpriv is not None, "setpriv (util-linux) is needed")
    root = WORK / "as-image"
    root.mkdir(mode=0o755)
    WORK.chmod(0o755)
    binary = root / "storage-grants"
    shutil.copy(ARGS.server, binary)
    binary.chmod(0o555)
    config = pod_files(helm_template()[0], root / "fs")
    for d in [root / "fs", *(root / "fs").rglob("*")]:
        d.chmod(0o555 if d.is_dir() else 0o444)
    port, metrics = free_port(), free_port()
    env = clean_env({
        # Loopback only: the pod's 0.0.0.0 listeners moved to 127.0.0.1.
        "STORAGE_GRANTS_LISTEN": f"127.0.0.1:{port}",
        "STORAGE_GRANTS_METRICS__LISTEN": f"127.0.0.1:{metrics}",
        "STORAGE_GRANTS_STORAGE__ENDPOINT": "http://127.0.0.1:9",
        "STORAGE_GRANTS_STORAGE__FORCE_PATH_STYLE": "true",
        "AWS_ACCESS_KEY_ID": "SGTEST" + os.urandom(6).hex().upper(),
        "AWS_SECRET_ACCESS_KEY": os.urandom(20).hex(),
        "AWS_REGION": "us-east-1",
    })
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [setpriv, f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}", "--clear-groups",
             str(binary), "serve", "--config", str(config)],
            cwd=root / "fs", env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + 20
        status = {}
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline and len(status) < 2:
                check(proc.poll() is None, f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
                for service in ("", READINESS_SERVICE):
                    try:
                        r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                        if r.status == health_pb2.HealthCheckResponse.SERVING:
                            status[service] = "SERVING"
                    except grpc.RpcError:
                        pass
                time.sleep(0.2)
        check(status == {"": "SERVING", READINESS_SERVICE: "SERVING"},
              f"health answers {status}:\n{log.read_text()[-3000:]}")
        proc.terminate()
        rc = proc.wait(timeout=30)
        check(rc == 0, f"exit code {rc} after SIGTERM:\n{log.read_text()[-3000:]}")
        print(f"    uid {NONROOT_UID}, no HOME, read-only cwd and config: liveness \"\" and "
              f"readiness {READINESS_SERVICE} SERVING; SIGTERM -> exit 0")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# === main ===


def main() -> int:
    global ARGS, WORK
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--helm", required=True)
    ap.add_argument("--promtool", required=True)
    ap.add_argument("--validator", required=True, help="the kubernetes-validate command")
    ap.add_argument("--server", required=True, help="the storage-grants binary")
    ap.add_argument("-k", "--filter", default="", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="storage-grants-helm-") as tmp:
        WORK = Path(tmp)
        for fn in TESTS:
            if ARGS.filter not in fn.__name__:
                continue
            start = time.monotonic()
            try:
                fn()
            except Failed as e:
                failed += 1
                print(f"FAIL {fn.__name__}: {e}")
                continue
            except Exception:  # a broken test is a failure too, with its traceback
                failed += 1
                print(f"FAIL {fn.__name__}:\n{traceback.format_exc()}")
                continue
            passed += 1
            print(f"ok   {fn.__name__} ({time.monotonic() - start:.1f}s)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
