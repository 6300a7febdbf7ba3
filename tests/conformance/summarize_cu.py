#!/usr/bin/env python3
"""Copied unchanged (apart from this note and the module name, which must be importable) from
the project's shared scripts, ../shared/scripts/summarize-cu.py, so that CI does not depend on
it; compare.py imports parse() from here.

Summarize iscsi-test-cu output: CUnit counts plus passed / failed / skipped.

CUnit 2.1 counts a test that calls CU_PASS("[SKIPPED] ...") as "passed"; this
splits those out as "skipped" (a test whose text has [SKIPPED] and no FAILED).

  ./summarize-cu.py FILE [FILE...]      -> table + failed/skipped lists
"""
import re
import sys
from collections import Counter

TEST_RE = re.compile(r'^  Test: (\S+) \.\.\.(.*)$')


def parse(path):
    tests = []  # (suite, name, status, text)
    suite = None
    cur = None
    summary = []
    for line in open(path, errors='replace'):
        line = line.rstrip('\n')
        if line.startswith('Suite: '):
            suite = line[7:].strip()
            continue
        m = TEST_RE.match(line)
        if m:
            cur = [suite, m.group(1), None, m.group(2)]
            tests.append(cur)
            rest = m.group(2)
            if rest.startswith('passed'):
                cur[2] = 'passed'
            elif rest.startswith('FAILED'):
                cur[2] = 'FAILED'
            continue
        if line.strip().startswith(('suites ', 'tests ', 'asserts ', 'Run Summary')):
            summary.append(line)
        if cur is not None and cur[2] is None:
            if line.startswith('passed'):
                cur[2] = 'passed'
            elif line.startswith('FAILED'):
                cur[2] = 'FAILED'
            else:
                cur[3] += '\n' + line
    out = []
    for s, n, st, txt in tests:
        if st == 'passed' and '[SKIPPED]' in txt:
            st = 'skipped'
        elif st is None:
            st = 'unfinished'
        out.append((s, n, st, txt))
    return out, summary


def main():
    for path in sys.argv[1:]:
        tests, summary = parse(path)
        c = Counter(t[2] for t in tests)
        print(f'== {path}')
        if len(summary) <= 4:
            for l in summary:
                print('   ' + l)
        else:
            print(f'   ({len(summary)//4} separate CUnit runs, per-suite mode)')
        print(f'   parsed: {len(tests)} tests: passed(clean)={c["passed"]} '
              f'skipped={c["skipped"]} failed={c["FAILED"]} unfinished={c["unfinished"]}')
        for s, n, st, txt in tests:
            if st in ('FAILED', 'unfinished'):
                msg = re.findall(r'\[FAILED\][^\n]*', txt)
                print(f'   {st:10s} {s}.{n}: {msg[0][9:120] if msg else ""}')
        reasons = Counter()
        for s, n, st, txt in tests:
            if st == 'skipped':
                r = re.search(r'\[SKIPPED\]\s*([^\n]*)', txt).group(1)
                r = re.sub(r'\. Skipping test\.?$', '', r).strip()
                reasons[r[:90]] += 1
        print('   skip reasons:')
        for r, k in reasons.most_common():
            print(f'     {k:3d}  {r}')


if __name__ == '__main__':
    main()
