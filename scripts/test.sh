#!/usr/bin/env bash
# The project's one test command.
#
#   bash scripts/test.sh            unit tests always; integration tests when a bench is found
#   bash scripts/test.sh --unit     unit tests only
#
# Unit layer: pytest over tests/ (the Frappe-free engine and channel code) in a venv at
# .venv (created on first use). Integration layer: `bench run-tests --app flow_automation`
# on a test site of a Frappe v15 bench found through $FRAPPE_BENCH or the usual places
# (/opt/*, /home/*/*, /root/*); this checkout is linked into the bench's apps/ and
# installed/migrated on the test site first. The summary says loudly which layers ran.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
unit_only=0
[ "${1:-}" = "--unit" ] && unit_only=1

red() { printf '\033[1;31m%s\033[0m\n' "$*"; }
green() { printf '\033[1;32m%s\033[0m\n' "$*"; }
yellow() { printf '\033[1;33m%s\033[0m\n' "$*"; }

# --- unit layer -------------------------------------------------------------------------
venv="${FLOW_AUTOMATION_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
	python3 -m venv "$venv" || { red "cannot create $venv"; exit 2; }
fi
stamp="$venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
	"$venv/bin/pip" install -q --disable-pip-version-check -e ".[test]" || { red "pip install failed"; exit 2; }
	touch "$stamp"
fi
# the Flow Builder's graph model is tested under node (tests/js) with the app's node_modules
if command -v node >/dev/null; then
	node_stamp="node_modules/.installed-$(cat package.json yarn.lock | sha1sum | cut -c1-12)"
	if [ ! -f "$node_stamp" ]; then
		command -v yarn >/dev/null || npm install -g yarn@1 >/dev/null 2>&1 || yellow "yarn 1 is missing: the builder's node tests will be skipped"
		if command -v yarn >/dev/null && yarn install --frozen-lockfile --silent --non-interactive >/tmp/flow_automation_yarn.log 2>&1; then
			touch "$node_stamp"
		else
			yellow "yarn install failed (see /tmp/flow_automation_yarn.log): the builder's node tests will be skipped"
		fi
	fi
fi
echo "== unit tests (pytest, no Frappe) =="
"$venv/bin/python" -m pytest -q tests
unit_rc=$?

# --- integration layer ------------------------------------------------------------------
find_bench() {
	if [ -n "${FRAPPE_BENCH:-}" ]; then
		[ -f "$FRAPPE_BENCH/sites/apps.txt" ] && echo "$FRAPPE_BENCH"
		return
	fi
	for f in /opt/*/sites/apps.txt /home/*/*/sites/apps.txt /root/*/sites/apps.txt; do
		[ -f "$f" ] && { dirname "$(dirname "$f")"; return; }
	done
}

find_site() {
	local bench="$1"
	if [ -n "${FRAPPE_TEST_SITE:-}" ]; then
		echo "$FRAPPE_TEST_SITE"
		return
	fi
	for conf in "$bench"/sites/*/site_config.json; do
		grep -Eq '"allow_tests"[[:space:]]*:[[:space:]]*(true|1)' "$conf" 2>/dev/null && { basename "$(dirname "$conf")"; return; }
	done
}

integration="SKIPPED"
integration_rc=0
reason=""
if [ "$unit_only" = 1 ]; then
	reason="--unit given"
else
	bench="$(find_bench)"
	site=""
	[ -n "$bench" ] && site="$(find_site "$bench")"
	if [ -z "$bench" ]; then
		reason="no Frappe bench found (set FRAPPE_BENCH to a bench folder)"
	elif [ -z "$site" ]; then
		reason="no test site in $bench (a site with allow_tests: true, or set FRAPPE_TEST_SITE)"
	else
		echo
		echo "== integration tests (bench $bench, site $site) =="
		frappe_cli() { (cd "$bench/sites" && "$bench/env/bin/python" -m frappe.utils.bench_helper frappe "$@"); }
		link="$bench/apps/flow_automation"
		if [ -e "$link" ] && [ ! -L "$link" ]; then
			red "$link is a real folder, not a link to this checkout; move it away to let the tests link $here"
			exit 2
		fi
		ln -sfn "$here" "$link"
		# from / so that this checkout's own folder does not shadow what the bench would import
		installed="$(cd / && "$bench/env/bin/python" -c 'import flow_automation, os; print(os.path.realpath(os.path.dirname(flow_automation.__file__)))' 2>/dev/null)"
		if [ "$installed" != "$(realpath "$here/flow_automation")" ]; then
			"$bench/env/bin/pip" install -q --disable-pip-version-check -e "$link" || { red "pip install into the bench failed"; exit 2; }
		fi
		# listed before the build: Frappe's esbuild builds the apps apps.txt names
		grep -qx flow_automation "$bench/sites/apps.txt" || { sed -i -e '$a\' "$bench/sites/apps.txt"; echo flow_automation >> "$bench/sites/apps.txt"; }
		# The Desk bundles (public/js/*.bundle.js: the Flow Builder), built as `bench build --app
		# flow_automation` builds them — Frappe's esbuild with this app's node_modules (yarn 1, as
		# `bench setup requirements --node`) — when their sources changed. Not `bench build`
		# itself: it ends with a FLUSHALL of Redis, which holds more than this test's caches.
		[ -e "$bench/sites/assets/flow_automation" ] || ln -sfn "$link/flow_automation/public" "$bench/sites/assets/flow_automation"
		bundle_stamp="$(cat package.json yarn.lock $(find flow_automation/public/js -type f | sort) 2>/dev/null | sha1sum | cut -c1-16)"
		bundle_marker="$bench/sites/assets/.flow_automation_bundles"
		# the built file lives in this checkout (public/dist, not committed): a fresh clone has none
		built="$(grep -o '"flow_builder.bundle.js": *"[^"]*"' "$bench/sites/assets/assets.json" 2>/dev/null | sed 's/.*: *"//; s/"$//')"
		if [ "$(cat "$bundle_marker" 2>/dev/null)" != "$bundle_stamp" ] || [ -z "$built" ] || [ ! -f "$bench/sites$built" ]; then
			command -v yarn >/dev/null || npm install -g yarn@1 >/dev/null 2>&1 || { red "yarn 1 is needed to build the Desk bundles"; exit 2; }
			(cd "$here" && yarn install --frozen-lockfile --silent --non-interactive) >/tmp/flow_automation_build.log 2>&1 \
				&& (cd "$bench/apps/frappe" && yarn run --silent production --apps flow_automation --run-build-command) >>/tmp/flow_automation_build.log 2>&1 \
				|| { red "building the Desk bundles failed (see /tmp/flow_automation_build.log)"; tail -20 /tmp/flow_automation_build.log; exit 2; }
			"$bench/env/bin/python" -c "import frappe; frappe.init(site='$site', sites_path='$bench/sites'); frappe.cache.delete_value('assets_json', shared=True)" \
				|| yellow "could not clear the cached assets.json"
			echo "$bundle_stamp" > "$bundle_marker"
		fi
		if ! frappe_cli --site "$site" list-apps 2>/dev/null | grep -q flow_automation; then
			frappe_cli --site "$site" install-app flow_automation || { red "install-app failed"; exit 2; }
		fi
		# migrate only when the schema or patches changed since the last run on this site
		schema="$(cat flow_automation/*/doctype/*/*.json flow_automation/patches.txt flow_automation/hooks.py \
			$(ls flow_automation/*/workspace/*/*.json flow_automation/*/number_card/*/*.json flow_automation/*/dashboard_chart/*/*.json flow_automation/*/page/*/*.json flow_automation/*/report/*/*.json 2>/dev/null) | sha1sum | cut -c1-16)"
		marker="$bench/sites/$site/.flow_automation_schema"
		if [ "$(cat "$marker" 2>/dev/null)" != "$schema" ]; then
			frappe_cli --site "$site" migrate --skip-search-index > /tmp/flow_automation_migrate.log 2>&1 \
				|| { red "migrate failed (see /tmp/flow_automation_migrate.log)"; tail -20 /tmp/flow_automation_migrate.log; exit 2; }
			echo "$schema" > "$marker"
		fi
		# Test dependencies, as `bench setup requirements --dev` installs them: every app's
		# [tool.bench.dev-dependencies] (Frappe's test helpers need freezegun, hypothesis, ...;
		# ours list playwright for the Desk tests). Checked every run; only what is missing or
		# at the wrong version is installed.
		missing="$("$bench/env/bin/python" - "$bench/apps" <<'PY'
import importlib.metadata, pathlib, sys, tomllib
from packaging.requirements import Requirement
for pyproject in sorted(pathlib.Path(sys.argv[1]).glob("*/pyproject.toml")):
	deps = tomllib.loads(pyproject.read_text()).get("tool", {}).get("bench", {}).get("dev-dependencies", {})
	for name, spec in deps.items():
		requirement = Requirement(f"{name}{spec}")
		try:
			installed = importlib.metadata.version(requirement.name)
		except importlib.metadata.PackageNotFoundError:
			installed = None
		if installed is None or not requirement.specifier.contains(installed, prereleases=True):
			print(requirement)
PY
)"
		if [ -n "$missing" ]; then
			echo "installing the apps' dev-dependencies: $(echo $missing)"
			# shellcheck disable=SC2086
			"$bench/env/bin/pip" install -q --disable-pip-version-check $missing \
				|| { red "installing the apps' dev-dependencies failed"; exit 2; }
		fi
		if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
			(apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null 2>&1 \
				|| yellow "could not install chromium: the Desk browser tests will be skipped"
		fi
		# Frappe v15 renders PDFs with wkhtmltopdf (generate_pdf steps, PDF attachments)
		if ! command -v wkhtmltopdf >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
			(apt-get install -y -q wkhtmltopdf || (apt-get update -q && apt-get install -y -q wkhtmltopdf)) >/dev/null 2>&1 \
				|| yellow "could not install wkhtmltopdf: the PDF tests will fail"
		fi
		# CI=1: bench run-tests exits 0 on failing tests without it
		CI=1 frappe_cli --site "$site" run-tests --app flow_automation
		integration_rc=$?
		if [ $integration_rc -eq 0 ]; then integration="PASSED"; else integration="FAILED"; fi
	fi
fi

echo
echo "================ test layers ================"
if [ $unit_rc -eq 0 ]; then green "unit (tests/, pytest):          PASSED"; else red "unit (tests/, pytest):          FAILED"; fi
case "$integration" in
	PASSED) green "integration (bench run-tests): PASSED" ;;
	FAILED) red "integration (bench run-tests): FAILED" ;;
	*) yellow "integration (bench run-tests): SKIPPED — $reason"
	   yellow "!!! Only the Frappe-free layer ran. Nothing that touches Frappe was tested. !!!" ;;
esac
[ $unit_rc -eq 0 ] && [ $integration_rc -eq 0 ]
