#!/usr/bin/env python3
"""Compare iscsi-test-cu logs of the conformance matrix with expected.tsv.

    compare.py [--expected expected.tsv] [--out results.tsv] [--target NAME]
               [--write-expected FILE] LU=LOG [LU=LOG ...]

A test counts as
  passed   clean CUnit pass (no "[SKIPPED]" in its text),
  skipped  CUnit pass whose text says "[SKIPPED] <reason>",
  FAILED   CUnit failure, or "unfinished" (the run was cut off inside it).
The run fails (exit 1) when any test FAILED, when a test expected to pass did not pass
(skipped or missing), or when an LU ran no tests at all. A skip that became a pass is reported
as an improvement and does not fail the run; update expected.tsv to lock it in.

expected.tsv: tab-separated `lu  suite.test  pass|skip  note`, '#' starts a comment.
--write-expected writes such a file from the given logs (passes -> pass, skips -> skip with the
skip reason, failures -> pass with the failure text as a note, since the target should pass
them; review those lines by hand).
"""
import argparse
import os
import re
import sys
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize_cu import parse  # noqa: E402  (copied from ../shared/scripts/summarize-cu.py)


def reason_of(status, text):
    if status == 'skipped':
        m = re.search(r'\[SKIPPED\]\s*([^\n]*)', text)
        r = m.group(1) if m else ''
        return re.sub(r'\. Skipping test\.?$', '', r).strip()[:120]
    if status in ('FAILED', 'unfinished'):
        m = re.findall(r'\[FAILED\][^\n]*', text)
        return (m[0][9:].strip() if m else status)[:120]
    return ''


def load_expected(path):
    exp = defaultdict(dict)  # lu -> test -> (status, note)
    if not path or not os.path.exists(path):
        return exp
    for n, line in enumerate(open(path), 1):
        line = line.rstrip('\n')
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        f = line.split('\t')
        if len(f) < 3 or f[2] not in ('pass', 'skip'):
            sys.exit(f'{path}:{n}: expected "lu<TAB>suite.test<TAB>pass|skip[<TAB>note]", got {line!r}')
        exp[f[0]][f[1]] = (f[2], f[3] if len(f) > 3 else '')
    return exp


def log_rc(path):
    rc = None
    for line in open(path, errors='replace'):
        m = re.match(r'^# rc=(\d+)', line)
        if m:
            rc = int(m.group(1))
    return rc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--expected')
    ap.add_argument('--out', help='write lu/test/status/reason/verdict rows here')
    ap.add_argument('--target', default='?')
    ap.add_argument('--write-expected')
    ap.add_argument('logs', nargs='+', metavar='LU=LOG')
    a = ap.parse_args()

    exp = load_expected(a.expected)
    rows = []
    totals = Counter()
    problems = []
    improvements = []
    for arg in a.logs:
        lu, _, path = arg.partition('=')
        if not path:
            sys.exit(f'argument {arg!r}: expected LU=LOG')
        tests, _ = parse(path)
        c = Counter(t[2] for t in tests)
        seen = {}
        for suite, name, status, text in tests:
            tname = f'{suite}.{name}'
            seen[tname] = status
            want = exp[lu].get(tname, (None, ''))[0]
            verdict = 'ok'
            if status in ('FAILED', 'unfinished'):
                verdict = 'FAIL'
            elif want == 'pass' and status != 'passed':
                verdict = 'FAIL'
            elif want == 'skip' and status == 'passed':
                verdict = 'improved'
            elif want is None and exp[lu]:
                verdict = 'new'
            rows.append((lu, tname, status, reason_of(status, text), want or '-', verdict))
            if verdict == 'FAIL':
                problems.append(f'{lu}: {tname}: {status} (expected {want or "-"}): {reason_of(status, text)}')
            elif verdict == 'improved':
                improvements.append(f'{lu}: {tname}: passed (expected skip)')
        missing = [t for t, (st, _) in sorted(exp[lu].items()) if st == 'pass' and t not in seen]
        for t in missing:
            rows.append((lu, t, 'missing', 'did not run', 'pass', 'FAIL'))
            problems.append(f'{lu}: {t}: did not run (expected pass)')
        if not tests:
            problems.append(f'{lu}: no tests ran (see {path})')
        rc = log_rc(path)
        note = ''
        if any(l.startswith('# STALLED') for l in open(path, errors='replace')):
            note = ' STALLED'
            problems.append(f'{lu}: iscsi-test-cu stalled (target hung?) (see {path})')
        elif rc in (124, 137):
            note = ' TIMED OUT'
            problems.append(f'{lu}: iscsi-test-cu timed out (see {path})')
        lu_failed = sum(1 for r in rows if r[0] == lu and r[5] == 'FAIL')
        print(f'{lu}: {c["passed"]} passed, {c["skipped"]} skipped, {c["FAILED"]} FAILED, '
              f'{c["unfinished"]} unfinished of {len(tests)} tests; '
              f'{len(missing)} expected passes missing; {lu_failed} problems{note}')
        totals['passed'] += c['passed']
        totals['skipped'] += c['skipped']
        totals['failed'] += lu_failed + (0 if tests else 1)

    if problems:
        print('problems:')
        for p in problems:
            print('  ' + p)
    if improvements:
        print('improvements (update expected.tsv):')
        for p in improvements:
            print('  ' + p)
    if a.out:
        with open(a.out, 'w') as f:
            f.write('lu\ttest\tstatus\treason\texpected\tverdict\n')
            for r in rows:
                f.write('\t'.join(r) + '\n')
    if a.write_expected:
        with open(a.write_expected, 'w') as f:
            f.write(f'# Generated by tests/conformance/compare.py --write-expected from a run against '
                    f'target={a.target}.\n# lu\tsuite.test\tpass|skip\tnote\n')
            for lu, t, st, reason, _, _ in rows:
                if st == 'passed':
                    f.write(f'{lu}\t{t}\tpass\t\n')
                elif st == 'skipped':
                    f.write(f'{lu}\t{t}\tskip\t{reason}\n')
                elif st in ('FAILED', 'unfinished'):
                    f.write(f'{lu}\t{t}\tpass\t{a.target} {st}: {reason}\n')
    print(f'conformance ({a.target}): {totals["passed"]} passed, {totals["failed"]} failed, '
          f'{totals["skipped"]} skipped')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
