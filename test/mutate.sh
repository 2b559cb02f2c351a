#!/usr/bin/env bash
# Mutation testing of the packages whose unit tests cover them, as a habit, not a CI gate:
# gremlins (github.com/go-gremlins/gremlins) makes one small change at a time in a
# package's code (a < for a <=, a == for a !=, a + for a -, ...), runs that package's
# tests, and counts the changes the tests caught (killed) and missed (lived).
#
#   test/mutate.sh                    # router monitor mux descend listener, an hour or more on 2 CPUs
#   test/mutate.sh mux descend        # some of them
#   MUTATE_WORKERS=2 test/mutate.sh   # mutants tested at once (default 1: the machine is shared)
#   MUTATE_TIMEOUT_COEFFICIENT=10 …   # a mutant's test run may take this many times the coverage run (5)
#
# It prints each package's efficacy (killed ÷ (killed + lived)) and mutant coverage, and keeps
# gremlins' JSON report and the list of survivors in $MUTATE_OUT (default
# ${TMPDIR:-/tmp}/olio-mutate). A mutant that lived is a change no unit test noticed: read it,
# and add a test where it matters. The end-to-end tests in test/ build the olio binary and are
# out of gremlins' reach; test/MUTANTS.md lists hand-made mutants and the test that kills each.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"
# Uncached: gremlins bounds each mutant's test run by a multiple of its coverage run, and a
# cached coverage run takes no time at all.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-count=1"

version=v0.6.0
if ! command -v gremlins >/dev/null 2>&1; then
	echo "installing gremlins $version from the module proxy"
	go install "github.com/go-gremlins/gremlins/cmd/gremlins@$version"
fi

out="${MUTATE_OUT:-${TMPDIR:-/tmp}/olio-mutate}"
mkdir -p "$out"
workers="${MUTATE_WORKERS:-1}"
pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	pkgs=(router monitor mux descend listener)
fi

summary="$out/summary.txt"
: >"$summary"
for pkg in "${pkgs[@]}"; do
	if [ ! -d "$pkg" ]; then
		echo "mutate: no package directory $pkg (give top-level package names: router, mux, …)" >&2
		exit 2
	fi
	echo "== $pkg"
	# A mutant whose tests run past the bound counts as timed out: most make a test wait
	# for something that never comes, but on a loaded machine raise the coefficient.
	gremlins unleash --workers "$workers" --timeout-coefficient "${MUTATE_TIMEOUT_COEFFICIENT:-5}" \
		--output "$out/$pkg.json" "./$pkg" 2>&1 | tee "$out/$pkg.log" |
		grep -E '^ *(LIVED|TIMED OUT)|Killed:|Timed out:|Not covered|efficacy|coverage' || true
	{
		printf '%s: ' "$pkg"
		grep -E 'Test efficacy|Mutator coverage' "$out/$pkg.log" | tr -s ' \n' ' '
		echo
	} >>"$summary"
	grep -E '^ *LIVED' "$out/$pkg.log" >"$out/$pkg.lived" || true
done
echo
echo "== efficacy per package (reports in $out)"
cat "$summary"
