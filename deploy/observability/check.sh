#!/usr/bin/env bash
# Checks the operator's kit in deploy/observability/ (run by .ci/run):
#
#   1. promtool check rules   devicelink.rules.yml
#   2. promtool test rules    the unit tests of every alert
#   3. every alert has a case where it fires and one where it stays quiet
#   4. every alert has its section in deploy/RUNBOOK.md, where its
#      `runbook` annotation points
#   5. the production overlay's PrometheusRule is the same rules
#      (prometheus-rule.sh --check) and kustomize renders it
#
# That the services export every metric the rules and the dashboard name,
# and that their /metrics pass `promtool check metrics`, is checked by the
# end-to-end test tests/tests/metrics_kit.rs, against the real services.
# promtool comes from install-promtool.sh (Debian's prometheus package,
# promtool alone unpacked).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

step() { printf '\n== %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

promtool=$(./install-promtool.sh)
echo "promtool $("$promtool" --version 2>&1 | head -n 1)"

step "promtool check rules"
"$promtool" check rules devicelink.rules.yml || fail "promtool check rules devicelink.rules.yml"

step "promtool test rules"
tests=(devicelink.rules.test.yml devicelink.rules.daily.test.yml)
"$promtool" test rules "${tests[@]}" || fail "promtool test rules ${tests[*]}"

step "every alert is tested firing and quiet"
# In the test files an alert's check reads `alertname: X` then either
# `exp_alerts: []` (quiet) or a list of expected alerts (fires).
cases=$(awk '
  /alertname:/ { name = $2; next }
  name != "" && /exp_alerts:/ { print name, ($2 == "[]" ? "quiet" : "fires"); name = "" }
' "${tests[@]}" | sort -u)
missing=0
for alert in $(sed -n 's/^ *- alert: *//p' devicelink.rules.yml); do
  for outcome in fires quiet; do
    if ! grep -qx "$alert $outcome" <<<"$cases"; then
      echo "FAIL: $alert has no case where it ${outcome/quiet/stays quiet}" >&2
      missing=1
    fi
  done
done
((missing == 0)) || fail "untested alerts"
echo "ok  $(sed -n 's/^ *- alert: *//p' devicelink.rules.yml | wc -l) alerts, each firing and quiet"

step "every alert has a runbook section"
alerts=$(sed -n 's/^ *- alert: *//p' devicelink.rules.yml)
for alert in $alerts; do
  grep -qx "### $alert" ../RUNBOOK.md || fail "deploy/RUNBOOK.md has no section '### $alert'"
  anchor=$(tr '[:upper:]' '[:lower:]' <<<"$alert")
  grep -q "runbook: \"deploy/RUNBOOK.md#$anchor\"" devicelink.rules.yml ||
    fail "$alert's runbook annotation does not point at deploy/RUNBOOK.md#$anchor"
done
echo "ok  $(wc -w <<<"$alerts") alerts, each with its section"

step "the production PrometheusRule"
./prometheus-rule.sh --check || fail "the PrometheusRule is stale"
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize ../k8s/overlays/production | grep -q '^kind: PrometheusRule$' ||
    fail "the production overlay does not render the PrometheusRule"
  echo "ok  the production overlay renders it"
else
  echo "skip  kubectl is not installed (deploy/check.sh needs it anyway)"
fi

step "observability checks passed"
