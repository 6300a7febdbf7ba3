#!/usr/bin/env python3
"""bench/perio_ab_report.py RUNS.TSV: the Markdown report of bench/perio_ab.sh.

Per job and build: medians over the repetitions of IOPS and p50 (wall-clock, load-sensitive),
and of per-I/O counts (counts over the run divided by the number of I/Os, login included):
target CPU in us, io_uring_enter calls, recv SQEs, send SQEs, CQEs, context switches, page
faults, mmap calls, and fio's CPU and syscalls. Then ours / base for each.
"""
import csv
import statistics
import sys

rows = list(csv.DictReader(open(sys.argv[1]), delimiter='\t'))
per_io = [
    ('task_clock_ms', 'tgt us/IO', 1000.0),
    ('enter', 'enter/IO', 1.0),
    ('sqe_recv', 'recv/IO', 1.0),
    ('sqe_send', 'send/IO', 1.0),
    ('cqe', 'CQE/IO', 1.0),
    ('cswitch', 'cs/IO', 1.0),
    ('faults', 'flt/IO', 1.0),
    ('mmap', 'mmap/kIO', 1000.0),
    ('fio_task_clock_ms', 'fio us/IO', 1000.0),
    ('fio_poll', 'fio poll/IO', 1.0),
    ('fio_read', 'fio read/IO', 1.0),
    ('fio_recvfrom', 'fio recv/IO', 1.0),
    ('fio_write', 'fio write/IO', 1.0),
    ('fio_writev', 'fio writev/IO', 1.0),
]


def med(vals):
    vals = [v for v in vals if v == v]
    return statistics.median(vals) if vals else float('nan')


jobs = []
for r in rows:
    if r['job'] not in jobs:
        jobs.append(r['job'])
print('# Per-I/O counts, ours vs base (null LU, bench/perio_ab.sh)\n')
print('Medians over %d repetitions run interleaved (ours, base, ours, base ...). Counts are per'
      ' I/O over a fixed number of I/Os (login included) from perf software events and'
      ' tracepoints, so machine load moves them little; IOPS and p50 are wall-clock and'
      ' noisy on a shared machine.\n' % max(int(r['rep']) for r in rows))
head = ['job', 'build', 'IOPS', 'p50 us'] + [p[1] for p in per_io]
print('| ' + ' | '.join(head) + ' |')
print('|' + '---|' * len(head))
for job in jobs:
    res = {}
    for kind in ('base', 'ours'):
        rs = [r for r in rows if r['job'] == job and r['kind'] == kind]
        if not rs:
            continue
        vals = [med(float(r['iops']) for r in rs), med(float(r['p50_us']) for r in rs)]
        for key, _, scale in per_io:
            vals.append(med(float(r[key]) * scale / float(r['n']) for r in rs))
        res[kind] = vals
        cells = [job, kind, f'{vals[0]:,.0f}', f'{vals[1]:.1f}'] + [f'{v:.3g}' for v in vals[2:]]
        print('| ' + ' | '.join(cells) + ' |')
    if len(res) == 2:
        ratio = ['%.2f' % (o / b) if b else '-' for o, b in zip(res['ours'], res['base'])]
        print('| ' + ' | '.join([job, 'ours/base'] + ratio) + ' |')
