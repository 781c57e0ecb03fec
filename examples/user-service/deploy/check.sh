#!/usr/bin/env bash
# deploy/check.sh — offline checks of examples/user-service's deployment
# files (no Docker engine or cluster needed); run by CTest as example.deploy.
#
# Room: examples/user-service/deploy. Writes only under a temporary
# directory. Checks:
#   - every YAML file under examples/user-service parses (python3-yaml)
#   - the base ConfigMap carries config/user-service.yaml verbatim
#   - the Deployment probes grpc.health.v1 with grpc: probes
#   - the kustomize overlays (k8s/overlays/*, k8s/components/*), by
#     k8s_check.py: every resource, component, patch and generated file
#     exists; each patch targets a resource; each overlay's config differs
#     from the base's only in its redis:/postgres: section and uses only
#     keys of docs/configuration.md; every Redis/PostgreSQL host in it is a
#     pod or Service of the manifests, on a port the Service has; selectors,
#     ConfigMaps, Secrets and names (master name, roles, database) agree;
#     the shell scripts in ConfigMaps and Jobs pass bash -n; PostgreSQL -c
#     settings exist (postgres --describe-config) and the Redis and
#     Sentinel configurations load in redis-server (when installed; the
#     sentinel.conf start-sentinel.sh writes, with the master at
#     127.0.0.1); and, when
#     kubectl is installed, `kubectl kustomize` builds each overlay into
#     exactly the resources the check expected (kubectl with kustomize
#     v3.7+ only: older ones, e.g. Debian 12's kubernetes-client 1.20, lack
#     Components and are not used)
#   - the dashboard JSON parses and equals what make_dashboard.py writes
#   - every dashboard expression is valid PromQL, and the scrape job is a
#     valid Prometheus config (promtool, when installed; Debian's promtool
#     lacks kubernetes_sd, so the job is checked with static targets)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ex=$(dirname "$here")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$ex" "$tmp" <<'PY'
import glob, json, os, sys, yaml
ex, tmp = sys.argv[1], sys.argv[2]
files = sorted(glob.glob(os.path.join(ex, "**", "*.yaml"), recursive=True))
assert files, "no YAML files found"
docs = {}
for f in files:
    with open(f) as fh:
        docs[os.path.relpath(f, ex)] = [d for d in yaml.safe_load_all(fh) if d]
print(f"yaml: {len(files)} files parse")

cm = docs["deploy/k8s/base/configmap.yaml"][0]
with open(os.path.join(ex, "config/user-service.yaml")) as fh:
    want = fh.read()
# One line may differ: the file binds /metrics to loopback, the cluster's
# copy to every interface so Prometheus can scrape the pod.
local_bind, pod_bind = '  listen: "127.0.0.1:9464"\n', '  listen: "0.0.0.0:9464"\n'
assert want.count(local_bind) == 1, "config/user-service.yaml: metrics.listen must be 127.0.0.1:9464"
assert cm["data"]["user-service.yaml"] == want.replace(local_bind, pod_bind), \
    "ConfigMap differs from config/user-service.yaml (beyond metrics.listen)"
assert yaml.safe_load(cm["data"]["user-service.yaml"])["metrics"]["listen"] == "0.0.0.0:9464"
print("configmap: equals config/user-service.yaml, metrics on 0.0.0.0:9464")

dep = docs["deploy/k8s/base/deployment.yaml"][0]
c = dep["spec"]["template"]["spec"]["containers"][0]
for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
    assert c[probe]["grpc"]["port"] == 50051, probe
kinds = sorted(d["kind"] for k, v in docs.items() if k.startswith("deploy/k8s/base/")
               for d in v if "kind" in d)
for k in ("ConfigMap", "Deployment", "HorizontalPodAutoscaler",
          "PodDisruptionBudget", "Service"):
    assert k in kinds, k
svc = docs["deploy/k8s/base/service.yaml"][0]
assert svc["spec"]["clusterIP"] == "None", "Service must be headless"
print("k8s base: " + ", ".join(kinds))

with open(os.path.join(ex, "deploy/grafana/user-service-dashboard.json")) as fh:
    dash = json.load(fh)
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
assert exprs
print(f"dashboard: JSON parses, {len(exprs)} queries")
# Grafana's variables become plain PromQL for promtool.
rules = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:q{i}",
     "expr": e.replace("$__rate_interval", "1m").replace("$job", ".*")
              .replace("$namespace", ".*").replace("$service", ".*")}
    for i, e in enumerate(exprs)]}]}
with open(os.path.join(tmp, "rules.yml"), "w") as fh:
    yaml.safe_dump(rules, fh)
scrape = docs["deploy/prometheus/scrape-config.yaml"][0]
job = scrape["scrape_configs"][0]
del job["kubernetes_sd_configs"]
job["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
with open(os.path.join(tmp, "prometheus.yml"), "w") as fh:
    yaml.safe_dump(scrape, fh)
PY

python3 "$here/grafana/make_dashboard.py" "$tmp/dashboard.json"
cmp "$tmp/dashboard.json" "$here/grafana/user-service-dashboard.json"
echo "dashboard: equals make_dashboard.py output"

if command -v promtool >/dev/null 2>&1; then
  promtool check rules "$tmp/rules.yml" >/dev/null
  echo "promtool: dashboard queries are valid PromQL"
  promtool check config --syntax-only "$tmp/prometheus.yml" >/dev/null
  echo "promtool: scrape job is valid"
else
  echo "promtool not installed: PromQL and scrape job not checked"
fi

python3 "$here/k8s_check.py" "$here/k8s" "$ex/../../docs/configuration.md" "$tmp"
