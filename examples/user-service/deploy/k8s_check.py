#!/usr/bin/env python3
"""k8s_check.py K8S_DIR CONFIGURATION_MD TMPDIR — offline checks of the
kustomize base, components and overlays under examples/user-service/deploy/k8s
(run by check.sh, CTest example.deploy). No cluster needed.

The overlays are built twice: by a small emulation of the kustomize features
these files use (resources, components, strategic-merge patches with
`$patch: delete`, configMapGenerator with behavior replace), which every
check below reads, and, when kubectl is installed, by `kubectl kustomize`,
whose output must hold the same resources, the same configuration file and
the same user-service environment.

Room: examples/user-service/deploy. Writes only under TMPDIR.
"""
import glob
import os
import re
import shutil
import socket
import subprocess
import sys

import yaml

K8S, CONFDOC, TMP = sys.argv[1:4]
errors = []


def fail(msg):
    errors.append(msg)


def load_docs(path):
    with open(path) as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def rid(d):
    return (d["kind"], d["metadata"]["name"])


# ---------------------------------------------------------------- kustomize


def merge(base, patch):
    """Strategic merge as kustomize does it for these files: maps merge,
    lists of maps merge by "name", `$patch: delete` removes an element."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    if (isinstance(base, list) and isinstance(patch, list) and
            all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out = [dict(x) for x in base]
        for p in patch:
            idx = [i for i, x in enumerate(out) if x["name"] == p["name"]]
            if p.get("$patch") == "delete":
                if not idx:
                    fail(f"patch deletes {p['name']!r}, which is not there")
                out = [x for x in out if x["name"] != p["name"]]
            elif idx:
                out[idx[0]] = merge(out[idx[0]], p)
            else:
                out.append(p)
        return out
    return patch


def build(d, res=None, chain=None):
    """Resources of the kustomization in directory d, as {(kind, name): doc};
    a Component applies to res, its parent's resources."""
    chain = chain if chain is not None else []
    kpath = os.path.join(d, "kustomization.yaml")
    if not os.path.isfile(kpath):
        fail(f"{d}: no kustomization.yaml")
        return res or {}
    with open(kpath) as fh:
        text = fh.read()
    chain.append(text)
    k = yaml.safe_load(text)
    component = res is not None
    want = "Component" if component else "Kustomization"
    if k.get("kind") != want:
        fail(f"{kpath}: kind {k.get('kind')}, expected {want}")
    res = res if component else {}
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(d, r))
        if os.path.isdir(p):
            sub = build(p, None, chain)
        elif os.path.isfile(p):
            sub = {rid(x): x for x in load_docs(p)}
        else:
            fail(f"{kpath}: resource {r} does not exist")
            continue
        for i, x in sub.items():
            if i in res:
                fail(f"{kpath}: {i} defined twice")
            res[i] = x
    for c in k.get("components", []):
        p = os.path.normpath(os.path.join(d, c))
        if not os.path.isdir(p):
            fail(f"{kpath}: component {c} does not exist")
            continue
        build(p, res, chain)
    for pt in k.get("patches", []):
        if "path" in pt:
            pp = os.path.join(d, pt["path"])
            if not os.path.isfile(pp):
                fail(f"{kpath}: patch {pt['path']} does not exist")
                continue
            docs = load_docs(pp)
        else:
            docs = [yaml.safe_load(pt["patch"])]
        for doc in docs:
            t = (doc["kind"], doc["metadata"]["name"])
            if t not in res:
                fail(f"{kpath}: patch targets {t}, which no resource defines")
                continue
            res[t] = merge(res[t], doc)
    for g in k.get("configMapGenerator", []):
        t = ("ConfigMap", g["name"])
        if g.get("behavior") != "replace" or t not in res:
            fail(f"{kpath}: configMapGenerator {g['name']} must replace an "
                 "existing ConfigMap (the Deployment mounts it by name)")
            continue
        data = {}
        for f in g.get("files", []):
            fp = os.path.join(d, f)
            if not os.path.isfile(fp):
                fail(f"{kpath}: generator file {f} does not exist")
                continue
            with open(fp) as fh:
                data[os.path.basename(f)] = fh.read()
        res[t] = dict(res[t], data=data)
    return res


# ------------------------------------------------------ generic consistency


def pod_templates(res):
    for (kind, name), d in res.items():
        if kind in ("Deployment", "StatefulSet", "Job"):
            yield kind, name, d["spec"]["template"]


def containers(tmpl):
    s = tmpl["spec"]
    return s.get("initContainers", []) + s["containers"]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_generic(name, res, chain):
    workloads = [(k, n, t["metadata"]["labels"]) for k, n, t in
                 pod_templates(res) if k != "Job"]
    for (kind, n), d in res.items():
        if kind == "Service":
            sel = d["spec"]["selector"]
            if not any(selects(sel, lab) for _, _, lab in workloads):
                fail(f"{name}: Service {n} selects no pods")
        if kind == "PodDisruptionBudget":
            sel = d["spec"]["selector"]["matchLabels"]
            if not any(selects(sel, lab) for _, _, lab in workloads):
                fail(f"{name}: PodDisruptionBudget {n} selects no pods")
        if kind == "StatefulSet":
            svc = res.get(("Service", d["spec"]["serviceName"]))
            lab = d["spec"]["template"]["metadata"]["labels"]
            if (svc is None or svc["spec"].get("clusterIP") != "None" or
                    not selects(svc["spec"]["selector"], lab)):
                fail(f"{name}: StatefulSet {n} needs the headless Service "
                     f"{d['spec']['serviceName']} selecting its pods")
            if not selects(d["spec"]["selector"]["matchLabels"], lab):
                fail(f"{name}: StatefulSet {n}: selector misses its pods")
    secrets = set()
    for kind, n, t in pod_templates(res):
        cms = {}
        for v in t["spec"].get("volumes", []):
            if "configMap" in v:
                cm = res.get(("ConfigMap", v["configMap"]["name"]))
                if cm is None:
                    fail(f"{name}: {kind} {n} mounts ConfigMap "
                         f"{v['configMap']['name']}, which is not defined")
                cms[v["name"]] = cm
        for c in containers(t):
            if "requests" not in c.get("resources", {}):
                fail(f"{name}: {kind} {n} container {c['name']}: no "
                     "resource requests")
            for m in c.get("volumeMounts", []):
                cm = cms.get(m["name"])
                if cm is not None and "subPath" in m and \
                        m["subPath"] not in cm.get("data", {}):
                    fail(f"{name}: {kind} {n} mounts {m['subPath']} of a "
                         "ConfigMap that has no such key")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secrets.add(ref["name"])
    # Secrets are created by hand (no passwords in git): each must be named,
    # with the command that creates it, in a kustomization on the way.
    for s in secrets:
        if not any(f"create secret generic {s}" in t for t in chain):
            fail(f"{name}: Secret {s} is used but no kustomization.yaml on "
                 "the way says how to create it")
    return secrets


# ------------------------------------------------------------ config file


def doc_keys():
    with open(CONFDOC) as fh:
        return set(re.findall(r"^\| `([a-z_]+\.[a-z_0-9]+)`", fh.read(), re.M))


DURATION = re.compile(r"^(0|([0-9]+(ms|s|m|h))+)$")


def check_config(name, cfg, base_cfg, want_sections, keys):
    differ = {s for s in set(cfg) | set(base_cfg)
              if cfg.get(s) != base_cfg.get(s)}
    if differ != want_sections:
        fail(f"{name}: config differs from the base in {sorted(differ)}, "
             f"expected only {sorted(want_sections)}")
    for s, body in cfg.items():
        for k in (body or {}):
            if f"{s}.{k}" not in keys:
                fail(f"{name}: key {s}.{k} is not in docs/configuration.md")
    r = cfg.get("redis", {})
    if "cluster_nodes" in r and "sentinels" in r:
        fail(f"{name}: redis.cluster_nodes and redis.sentinels exclude each other")
    if ("cluster_nodes" in r or "sentinels" in r) and "address" in r:
        fail(f"{name}: redis.address is ignored beside cluster_nodes/sentinels")
    if "sentinels" in r and not r.get("master_name"):
        fail(f"{name}: redis.sentinels needs redis.master_name")
    for s in ("redis", "postgres"):
        for k, v in cfg.get(s, {}).items():
            if k.endswith(("timeout", "_lag", "_check", "_refresh")) and \
                    not DURATION.match(str(v)):
                fail(f"{name}: {s}.{k}: {v!r} is not a duration")


def hostport(a):
    h, _, p = a.rpartition(":")
    return h, int(p)


def service_ports(svc):
    return {p["port"] for p in svc["spec"]["ports"]}


def pod_of(res, host):
    """(StatefulSet, ordinal) for a pod DNS name POD.SERVICE, else None."""
    pod, _, svc = host.partition(".")
    for (kind, n), d in res.items():
        if kind == "StatefulSet" and d["spec"]["serviceName"] == svc:
            m = re.fullmatch(re.escape(n) + r"-([0-9]+)", pod)
            if m and int(m.group(1)) < d["spec"]["replicas"]:
                return d, int(m.group(1))
    return None


def check_host(name, res, what, host, port):
    """host is a pod of a StatefulSet (POD.SERVICE) or a Service's name
    (same namespace), with port among the Service's ports."""
    svc_name = host.partition(".")[2] if "." in host else host
    svc = res.get(("Service", svc_name))
    if svc is None:
        fail(f"{name}: {what} {host}:{port}: no Service {svc_name}")
        return
    if "." in host and pod_of(res, host) is None:
        fail(f"{name}: {what} {host}: no such StatefulSet pod behind {svc_name}")
    if port not in service_ports(svc):
        fail(f"{name}: {what} {host}:{port}: Service {svc_name} has no port {port}")


def dsn(s):
    return dict(kv.split("=", 1) for kv in s.split())


def script_of(res, cm, key):
    d = res.get(("ConfigMap", cm))
    return d["data"][key] if d and key in d.get("data", {}) else ""


def check_redis_cluster(name, res, r):
    seeds = [hostport(a) for a in r["cluster_nodes"]]
    for h, p in seeds:
        check_host(name, res, "redis.cluster_nodes", h, p)
    found = pod_of(res, seeds[0][0])
    if not found:
        return
    sts = found[0]
    svc = sts["spec"]["serviceName"]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    # The seeds must be the names the nodes announce: CLUSTER SLOTS and
    # MOVED then name the hosts perfc was given.
    if c.get("args") != ["--cluster-announce-hostname", f"$(POD_NAME).{svc}"]:
        fail(f"{name}: redis cluster nodes must announce $(POD_NAME).{svc}")
    conf = script_of(res, "redis-cluster-config", "redis.conf")
    for line in ("cluster-enabled yes", "cluster-preferred-endpoint-type hostname"):
        if line not in conf.splitlines():
            fail(f"{name}: redis cluster config lacks {line!r}")
    job = res.get(("Job", "redis-cluster-create"))
    if job is None:
        fail(f"{name}: no Job redis-cluster-create")
        return
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    n = sts["spec"]["replicas"]
    if f"for i in {' '.join(str(i) for i in range(n))}; do" not in script or \
            f'h="{sts["metadata"]["name"]}-$i.{svc}"' not in script:
        fail(f"{name}: the create Job must wait for all {n} pods of {svc}")
    if "--cluster-replicas 1" not in script or n != 6:
        fail(f"{name}: expected 6 nodes, --cluster-replicas 1 (3 masters)")


def check_redis_sentinel(name, res, r):
    for a in r["sentinels"]:
        h, p = hostport(a)
        check_host(name, res, "redis.sentinels", h, p)
    sts = res.get(("StatefulSet", "redis-sentinel"))
    if sts and sts["spec"]["replicas"] != len(r["sentinels"]):
        fail(f"{name}: {len(r['sentinels'])} sentinels configured, "
             f"{sts['spec']['replicas']} deployed")
    mn = r["master_name"]
    sent = script_of(res, "redis-sentinel-config", "start-sentinel.sh")
    start = script_of(res, "redis-sentinel-scripts", "start-redis.sh")
    if f"sentinel monitor {mn} " not in sent:
        fail(f"{name}: the sentinels do not monitor {mn!r}")
    for s, what in ((sent, "sentinel"), (start, "redis")):
        if f"get-master-addr-by-name {mn}" not in s:
            fail(f"{name}: start-{what}.sh does not ask for {mn!r}")
        # the first master and the sentinels the scripts name are real pods
        m = re.search(r'master="([a-z0-9.-]+)"$', s, re.M)
        if not m or pod_of(res, m.group(1)) is None:
            fail(f"{name}: start-{what}.sh: first master is not a pod")
    for i in range(len(r["sentinels"])):
        if pod_of(res, f"redis-sentinel-{i}.redis-sentinel") is None:
            fail(f"{name}: redis-sentinel-{i} missing")
    redis = res.get(("StatefulSet", "redis"))
    if redis and r.get("wait_replicas", 0) > redis["spec"]["replicas"] - 1:
        fail(f"{name}: wait_replicas {r['wait_replicas']} > replicas deployed")


def check_postgres(name, res, p):
    main, rep = dsn(p["dsn"]), dsn(p["replica_dsn"])
    for what, d in (("postgres.dsn", main), ("postgres.replica_dsn", rep)):
        hosts = d["host"].split(",")
        ports = d.get("port", "5432").split(",")
        ports = ports * len(hosts) if len(ports) == 1 else ports
        if len(ports) != len(hosts):
            fail(f"{name}: {what}: {len(hosts)} hosts, {len(ports)} ports")
        for h, pt in zip(hosts, ports):
            check_host(name, res, what, h, int(pt))
        if "password" in d:
            fail(f"{name}: {what} carries a password; use PGPASSWORD")
    # The read-write DSN lists every server, so a promoted standby is found.
    pods = {f"{n}-{i}.{d['spec']['serviceName']}"
            for (k, n), d in res.items() if k == "StatefulSet" and
            d["spec"]["template"]["metadata"]["labels"].get(
                "app.kubernetes.io/name") == "postgres"
            for i in range(d["spec"]["replicas"])}
    if set(main["host"].split(",")) != pods:
        fail(f"{name}: postgres.dsn lists {main['host']}, the servers are {sorted(pods)}")
    first = rep["host"].split(",")[0]
    svc = res.get(("Service", first))
    stby = res.get(("StatefulSet", "pg-standby"))
    if not svc or not stby or svc["spec"].get("clusterIP") == "None" or \
            svc["spec"]["selector"].get("app.kubernetes.io/component") != "standby" or \
            not selects(svc["spec"]["selector"], stby["spec"]["template"]["metadata"]["labels"]):
        fail(f"{name}: replica_dsn must start with the read-only Service of the standbys")
    roles = script_of(res, "pg-ha-scripts", "10-roles.sh")
    for d in (main, rep):
        if f"CREATE ROLE {d['user']} " not in roles or \
                f"CREATE DATABASE {d['dbname']} OWNER {d['user']}" not in roles:
            fail(f"{name}: the init script does not create {d['user']}/{d['dbname']}")
    clone = script_of(res, "pg-ha-scripts", "clone-standby.sh")
    m = re.search(r"^primary=(\S+)$", clone, re.M)
    if not m or pod_of(res, m.group(1)) is None:
        fail(f"{name}: clone-standby.sh: the primary is not a pod")
    # The service's password is the one the primary gave the role.
    dep = res[("Deployment", "user-service")]
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    for e in ("PERFC_POSTGRES_DSN", "PERFC_POSTGRES_REPLICA_DSN"):
        if e in env:
            fail(f"{name}: {e} would override the config file's DSNs")
    prim = res[("StatefulSet", "pg-primary")]["spec"]["template"]["spec"]["containers"][0]
    penv = {e["name"]: e for e in prim["env"]}
    if env.get("PGPASSWORD", {}).get("valueFrom") != penv["USERS_PASSWORD"]["valueFrom"]:
        fail(f"{name}: PGPASSWORD is not the users role's password")


# ----------------------------------------------- tools, when they exist


def check_scripts(res):
    n = 0
    for (kind, cm), d in res.items():
        if kind == "ConfigMap":
            for key, text in d.get("data", {}).items():
                if key.endswith(".sh"):
                    n += bash_n(f"{cm}/{key}", text)
    for kind, nm, t in pod_templates(res):
        for c in containers(t):
            cmd = c.get("command", [])
            if cmd[:1] == ["bash"] and len(cmd) == 3 and cmd[1].startswith("-"):
                n += bash_n(f"{nm}/{c['name']}", cmd[2])
    return n


def bash_n(what, text):
    r = subprocess.run(["bash", "-n"], input=text, text=True,
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        fail(f"{what}: bash -n: {r.stderr.strip()}")
    return 1


def check_pg_settings(res):
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not bins:
        return "postgres not installed: -c settings not checked"
    r = subprocess.run([bins[-1], "--describe-config"], capture_output=True,
                       text=True, timeout=60)
    known = {line.split("\t")[0] for line in r.stdout.splitlines()}
    seen = set()
    for kind, nm, t in pod_templates(res):
        for c in t["spec"]["containers"]:
            a = c.get("args", [])
            for i, x in enumerate(a):
                if x == "-c":
                    seen.add(a[i + 1].split("=", 1)[0])
    roles = script_of(res, "pg-ha-scripts", "10-roles.sh")
    seen |= set(re.findall(r"ALTER SYSTEM SET (\w+)", roles))
    for s in sorted(seen - known):
        fail(f"postgres setting {s} does not exist ({bins[-1]})")
    return f"postgres: {len(seen)} settings exist ({os.path.basename(os.path.dirname(os.path.dirname(bins[-1])))})"


def sentinel_conf(res):
    """The sentinel.conf start-sentinel.sh writes, with the master at
    127.0.0.1 (the pod names do not resolve here)."""
    s = script_of(res, "redis-sentinel-config", "start-sentinel.sh")
    m = re.search(r'^ *cat > "\$conf" <<CONF\n(.*?)^CONF$', s, re.M | re.S)
    if not m:
        fail("start-sentinel.sh: no sentinel.conf here-document")
        return None
    return (m.group(1).replace("$me", "redis-sentinel-0.redis-sentinel")
            .replace("$master", "127.0.0.1"))


def free_port():
    """A loopback port whose port + 10000 (a cluster node's bus) is free
    too, so at most 55535 (redis-server refuses higher ones in cluster
    mode). Bounded: 200 tries."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 55535:
            continue
        try:
            with socket.socket() as b:
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free loopback port pair for redis-server")


def check_redis_conf(name, text, sentinel=False):
    """Starts redis-server on the file (loopback, a free port, a scratch
    dir) for at most 1.5 s. A bad or unknown directive stops it while
    loading (FATAL CONFIG FILE ERROR, no "Configuration loaded"); a port
    taken meanwhile by another process is not the file's fault."""
    port = free_port()
    d = os.path.join(TMP, f"redis-{port}")
    os.makedirs(d)
    conf = os.path.join(d, "redis.conf")
    # The pod's paths (/data) do not exist here: the scratch dir instead.
    text = re.sub(r"^dir .*$", f"dir {d}", text, flags=re.M)
    text = re.sub(r"^cluster-config-file .*$",
                  f"cluster-config-file {d}/nodes.conf", text, flags=re.M)
    with open(conf, "w") as fh:
        fh.write(text)
    r = subprocess.run(
        ["timeout", "1.5", "redis-server", conf, "--port", str(port),
         "--bind", "127.0.0.1", "--daemonize", "no", "--logfile", ""] +
        (["--sentinel"] if sentinel else ["--appendonly", "no"]),
        capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    if "FATAL CONFIG FILE ERROR" in out or "Configuration loaded" not in out:
        fail(f"{name}: redis-server refused the configuration: "
             f"{out.strip()[-400:]}")


def kubectl_build(d):
    r = subprocess.run(["kubectl", "kustomize", d], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        fail(f"kubectl kustomize {d}: {r.stderr.strip()}")
        return None
    return {rid(x): x for x in yaml.safe_load_all(r.stdout) if x}


# ------------------------------------------------------------------- main

WANT = {"redis-cluster": {"redis"}, "redis-sentinel": {"redis"},
        "postgres-ha": {"postgres"}}

keys = doc_keys()
assert len(keys) > 50, "docs/configuration.md: key table not found"
base = build(os.path.join(K8S, "base"))
base_cfg = yaml.safe_load(base[("ConfigMap", "user-service-config")]["data"]["user-service.yaml"])
check_config("base", base_cfg, base_cfg, set(), keys)
overlays = sorted(os.listdir(os.path.join(K8S, "overlays")))
assert overlays, "no overlays"
def kubectl_with_components():
    """kubectl whose built-in kustomize knows Components (v3.7+; kubectl
    1.24+ prints its version). Debian 12's kubernetes-client (1.20, kustomize
    2.0.3) does not: it is then not used."""
    k = shutil.which("kubectl")
    if not k:
        return None, "not installed"
    r = subprocess.run([k, "version", "--client"], capture_output=True,
                       text=True, timeout=60)
    m = re.search(r"Kustomize Version: v([0-9]+)\.([0-9]+)", r.stdout)
    if not m or (int(m.group(1)), int(m.group(2))) < (3, 7):
        return None, "its kustomize predates Components (needs v3.7+)"
    return k, None


kubectl, why_not = kubectl_with_components()
scripts = 0
built = {}
for ov in overlays:
    d = os.path.join(K8S, "overlays", ov)
    chain = []
    res = build(d, None, chain)
    built[ov] = res
    with open(os.path.join(d, "kustomization.yaml")) as fh:
        comps = [os.path.basename(c) for c in yaml.safe_load(fh).get("components", [])]
    if not comps:
        fail(f"{ov}: no components")
    want = set().union(*(WANT.get(c, {"?"}) for c in comps))
    cfg = yaml.safe_load(res[("ConfigMap", "user-service-config")]["data"]["user-service.yaml"])
    check_config(ov, cfg, base_cfg, want, keys)
    secrets = check_generic(ov, res, chain)
    r = cfg["redis"]
    if "cluster_nodes" in r:
        check_redis_cluster(ov, res, r)
    elif "sentinels" in r:
        check_redis_sentinel(ov, res, r)
    if "postgres" in want:
        check_postgres(ov, res, cfg["postgres"])
    if kubectl:
        k = kubectl_build(d)
        if k is not None:
            if set(k) != set(res):
                fail(f"{ov}: kubectl kustomize gives {sorted(set(k) ^ set(res))} "
                     "unlike the check's emulation")
            cm = k.get(("ConfigMap", "user-service-config"), {})
            if cm.get("data") != res[("ConfigMap", "user-service-config")]["data"]:
                fail(f"{ov}: kubectl kustomize: the config file differs")
            def env(x):
                c = x[("Deployment", "user-service")]["spec"]["template"]["spec"]["containers"][0]
                return sorted(c["env"], key=lambda e: e["name"])
            if k.get(("Deployment", "user-service")) and env(k) != env(res):
                fail(f"{ov}: kubectl kustomize: the user-service env differs")
    print(f"overlay {ov}: {len(res)} resources, config differs in "
          f"{'/'.join(sorted(want))} only, secrets {sorted(secrets)}")

allres = {}
for res in built.values():
    allres.update(res)
scripts = check_scripts(allres)
print(f"scripts: {scripts} pass bash -n")
print(check_pg_settings(allres))
if shutil.which("redis-server") and shutil.which("timeout"):
    confs = [(f"{n}/redis.conf", d["data"]["redis.conf"]) for (k, n), d in
             allres.items() if k == "ConfigMap" and "redis.conf" in d.get("data", {})]
    for n, text in confs:
        check_redis_conf(n, text)
    sc = sentinel_conf(allres) if ("ConfigMap", "redis-sentinel-config") in allres else None
    if sc is not None:
        check_redis_conf("sentinel.conf of start-sentinel.sh", sc, sentinel=True)
    print(f"redis-server: {len(confs)} configurations and "
          f"{'the' if sc else 'no'} sentinel configuration load")
else:
    print("redis-server not installed: Redis configurations not loaded")
print("kubectl kustomize: " + ("each overlay builds the same resources, "
                               "config and environment" if kubectl
                               else f"{why_not}: emulation only"))
if errors:
    for e in errors:
        print("FAIL:", e, file=sys.stderr)
    sys.exit(1)
