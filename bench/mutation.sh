#!/usr/bin/env bash
# Mutation testing of the engine's core modules with mutmut (pinned in requirements-dev.txt):
# every small change mutmut makes to owl_core/geometry.py, engine/scoring.py and
# engine/matching.py should make one of the focused tests fail ([tool.mutmut] in
# pyproject.toml names the modules and the tests). Slow (minutes to an hour on 2 cores), so it
# is not part of the test suite; results are cached in mutants/ and a rerun continues.
#   bash bench/mutation.sh                        # run, then print the score
#   MUTATION_TIMEOUT=600 bash bench/mutation.sh   # stop after 10 minutes; rerun to continue
#   bash bench/mutation.sh "owl_core.geometry*"   # only these mutants (names as `results`)
#   .venv/bin/python -m mutmut results            # the surviving mutants; `mutmut show NAME`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_venv.sh
owl_python
"$PY" -c "import mutmut" 2>/dev/null || owl_install requirements-dev.txt
status=0
timeout "${MUTATION_TIMEOUT:-3600}" "$PY" -m mutmut run --max-children "${MUTATION_CHILDREN:-2}" \
    "$@" || status=$?
[[ $status -eq 124 ]] && echo "stopped after ${MUTATION_TIMEOUT:-3600} s; run again to continue"
"$PY" -m mutmut export-cicd-stats >/dev/null
"$PY" -m mutmut results --all true > mutants/results.txt 2>/dev/null || true
"$PY" - <<'PY'
import collections
import json
import re

per_module = collections.defaultdict(collections.Counter)
for line in open("mutants/results.txt"):
    found = re.match(r"\s*(owl_core[\w.]*?)\.x\S*__mutmut_\d+: (.+)$", line)
    if found:
        per_module[found.group(1)][found.group(2).strip()] += 1
for module, counts in sorted(per_module.items()):
    print(f"{module}: " + ", ".join(f"{n} {status}" for status, n in counts.most_common())
          + f" (of {sum(counts.values())})")
s = json.load(open("mutants/mutmut-cicd-stats.json"))
checked = s["killed"] + s["survived"] + s["timeout"] + s["suspicious"] + s["segfault"]
score = 100.0 * (s["killed"] + s["timeout"]) / checked if checked else float("nan")
print(f"mutation score {score:.1f}% ({s['killed']} killed, {s['timeout']} timed out, "
      f"{s['survived']} survived, {s['no_tests']} without tests, "
      f"{s['total'] - checked - s['no_tests']} not run yet, of {s['total']})")
PY
exit $((status == 124 ? 0 : status))
