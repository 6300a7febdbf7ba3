#!/usr/bin/env python3
"""Write the non-clean results of an iscsi-test-cu log as `Suite.Test<TAB>skip|FAILED<TAB>reason`.

  gen-expected.py OUT.txt "HEADER LINE" [CAUSE_FILE] > expected.tsv
CAUSE_FILE: optional `Suite.Test<TAB>cause` lines that replace the log's text for failures.
"""
import importlib.util
import re
import sys

spec = importlib.util.spec_from_file_location("s", "/work/shared/scripts/summarize-cu.py")
s = importlib.util.module_from_spec(spec)
spec.loader.exec_module(s)
tests, _ = s.parse(sys.argv[1])
causes = {}
if len(sys.argv) > 3:
    for line in open(sys.argv[3]):
        if line.strip() and not line.startswith('#'):
            k, v = line.rstrip('\n').split('\t', 1)
            causes[k] = v
print(f"# {sys.argv[2]}")
for suite, name, st, txt in tests:
    key = f"{suite}.{name}"
    if st == 'skipped':
        m = re.search(r'\[SKIPPED\]\s*(.*)', txt)
        reason = m.group(1).strip() if m else ''
        reason = re.sub(r'\s*Skipping test\.?$', '', reason).rstrip('.')
        print(f"{key}\tskip\t{reason}")
    elif st != 'passed':
        reason = causes.get(key) or ' '.join(txt.split())[:200]
        print(f"{key}\t{st}\t{reason}")
