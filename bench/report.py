#!/usr/bin/env python3
"""Turn one bench/run.sh results directory into results.json, results.tsv, report.md, chart.png.

    bench/report.py bench/results/<timestamp>

Inputs (written by run.sh): runs.tsv (one row per fio run, with the target's CPU seconds and
the load average before it), fio/*.json (fio --output-format=json), tcp/*.json (iperf3 -J),
meta/meta.tsv (machine, versions, settings), meta/params-<target>-<lu>.txt (tgtadm show --tid).
Python standard library plus matplotlib (for the chart only; without it the chart is skipped).
"""
import json
import os
import sys

FIELDS = ['target', 'lu', 'job', 'reps', 'rw', 'bs', 'iodepth', 'iops', 'mb_s', 'clat_p50_us', 'clat_p99_us',
          'clat_p999_us', 'target_cpu_s', 'wall_s', 'target_cores_busy', 'ios_per_target_cpu_s',
          'fio_cpu_pct', 'loadavg1_before', 'fio_rc', 'fio_errors', 'intarget_cmds', 'intarget_p50_us',
          'intarget_p99_us', 'target_ctxt_switches', 'cpu_us_per_io', 'ctxt_per_io', 'cluster_cs_cpu_s',
          'cluster_cs_cpu_us_per_io', 'cluster_other_cpu_s']


def read_tsv(path):
    with open(path) as f:
        head = f.readline().rstrip('\n').split('\t')
        return [dict(zip(head, line.rstrip('\n').split('\t'))) for line in f if line.strip()]


def read_meta(d):
    meta = {}
    p = os.path.join(d, 'meta', 'meta.tsv')
    if os.path.exists(p):
        for line in open(p):
            k, _, v = line.rstrip('\n').partition('\t')
            meta[k] = v
    return meta


def fio_metrics(path, rw):
    """IOPS, MB/s, clat percentiles (µs) and fio's own CPU use from one fio JSON."""
    try:
        with open(path) as f:
            text = f.read()
        # fio may print warnings before the JSON object.
        d = json.loads(text[text.index('{'):])
    except (OSError, ValueError) as e:
        return {'error': f'{os.path.basename(path)}: {e}'}
    j = d['jobs'][0]
    side = j['write' if 'write' in rw else 'read']
    pct = side.get('clat_ns', {}).get('percentile', {})

    def p(k):
        v = pct.get(k)
        return round(v / 1000.0, 1) if v is not None else None

    return {
        'iops': round(side['iops'], 1),
        'mb_s': round(side['bw_bytes'] / 1e6, 1),
        'clat_p50_us': p('50.000000'),
        'clat_p99_us': p('99.000000'),
        'clat_p999_us': p('99.900000'),
        'fio_cpu_pct': round(j.get('usr_cpu', 0) + j.get('sys_cpu', 0), 1),
        'fio_errors': j.get('error', 0),
    }


def intarget_latency(path, rw):
    """Our tgtd's own latency for the job's direction, from the latency table that
    `tgtadm --op stat` prints after tgt's counter lines (command arrival to status sent)."""
    want = 'write' if 'write' in rw else 'read'
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return {}
    try:
        start = next(i for i, l in enumerate(lines) if l.startswith('In-target latency'))
    except StopIteration:
        return {}
    for l in lines[start + 2:]:
        f = l.split()
        # tgt lun op cmds mean p50 p90 p99 p99.9 max
        if len(f) == 10 and f[2] == want:
            return {'intarget_cmds': int(f[3]), 'intarget_p50_us': float(f[5]),
                    'intarget_p99_us': float(f[7])}
    return {}


def iperf_mb_s(path):
    try:
        d = json.load(open(path))
        return round(d['end']['sum_received']['bits_per_second'] / 8e6, 1)
    except (OSError, ValueError, KeyError):
        return None


def collect(d):
    runs = []
    for r in read_tsv(os.path.join(d, 'runs.tsv')):
        m = fio_metrics(os.path.join(d, r['fio_json']), r['rw'])
        row = {k: r.get(k) for k in ('target', 'lu', 'job', 'rw', 'bs', 'fio_rc', 'fio_json')}
        row['iodepth'] = int(r['iodepth'])
        row['rep'] = int(r.get('rep') or 1)
        row['target_cpu_s'] = float(r['target_cpu_s'])
        row['wall_s'] = float(r['wall_s'])
        row['loadavg1_before'] = float(r['loadavg1_before'])
        row.update(m)
        row.update(intarget_latency(os.path.join(d, r['fio_json'][:-len('.json')] + '.stat.txt'), r['rw']))
        # Average number of target cores kept busy during the fio run (login and ramp included),
        # and IOs completed per target CPU-second at that steady rate.
        busy = row['target_cpu_s'] / row['wall_s'] if row['wall_s'] > 0 else 0
        row['target_cores_busy'] = round(busy, 3)
        row['ios_per_target_cpu_s'] = round(row['iops'] / busy) if busy > 0 and 'iops' in row else None
        # Per-I/O costs at that steady rate: target CPU µs and context switches (all target
        # threads), and the Curve cluster's chunk-server CPU µs (curve LU; older runs lack them).
        rate = row.get('iops') or 0
        wall = row['wall_s']

        def per_io(v, scale=1.0):
            return round(scale * v / wall / rate, 2) if v is not None and wall > 0 and rate > 0 else None

        def num(k):
            v = r.get(k)
            return float(v) if v not in (None, '') else None

        row['target_ctxt_switches'] = num('target_ctxt_switches')
        row['cluster_cs_cpu_s'] = num('cluster_cs_cpu_s')
        row['cluster_other_cpu_s'] = num('cluster_other_cpu_s')
        row['cpu_us_per_io'] = per_io(row['target_cpu_s'], 1e6)
        row['ctxt_per_io'] = per_io(row['target_ctxt_switches'])
        row['cluster_cs_cpu_us_per_io'] = (per_io(row['cluster_cs_cpu_s'], 1e6)
                                           if row['lu'] == 'curve' else None)
        runs.append(row)
    tcp = {}
    tdir = os.path.join(d, 'tcp')
    if os.path.isdir(tdir):
        for n in sorted(os.listdir(tdir)):
            if n.endswith('.json'):
                tcp[n[:-5]] = iperf_mb_s(os.path.join(tdir, n))
    return runs, tcp


def median(vals):
    v = sorted(x for x in vals if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def medians(runs):
    """One row per (target, lu, job): with --reps N each numeric figure is the median of its N
    runs (each figure on its own, so a row need not be one actual run); 'reps' says how many."""
    groups = {}
    for r in runs:
        groups.setdefault((r['target'], r['lu'], r['job']), []).append(r)
    out = []
    for rs in groups.values():
        if len(rs) == 1:
            out.append(dict(rs[0], reps=1))
            continue
        row = dict(rs[0], reps=len(rs))
        for k, v in rs[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ('iodepth', 'rep'):
                m = median(x.get(k) for x in rs)
                row[k] = round(m, 2) if isinstance(m, float) else m
        bad = [x for x in rs if x.get('fio_rc') != '0' or x.get('fio_errors') or 'error' in x]
        if bad:
            row.update({k: bad[0].get(k) for k in ('fio_rc', 'fio_errors', 'error', 'fio_json') if k in bad[0]})
        out.append(row)
    return out


def ratio(a, b):
    return round(a / b, 2) if a is not None and b not in (None, 0) else None


def fmt(v, nd=0):
    if v is None:
        return '–'
    if isinstance(v, float) and nd == 0:
        return f'{v:,.0f}'
    return f'{v:,.{nd}f}' if isinstance(v, (int, float)) else str(v)


def comparisons(runs):
    """Pair ours with tgt for the same LU and job; ours' rdwr also against tgt's aio."""
    by = {(r['target'], r['lu'], r['job']): r for r in runs}
    out = []
    for (t, lu, job), o in sorted(by.items(), key=lambda kv: (kv[0][1], kv[1]['rw'], kv[1]['bs'], kv[1]['iodepth'])):
        if t != 'ours':
            continue
        for tlu in ([lu, 'aio'] if lu == 'rdwr' else [lu]):
            g = by.get(('tgt', tlu, job))
            if g is None:
                continue
            out.append({'lu_ours': lu, 'lu_tgt': tlu, 'job': job,
                        'iops_ratio': ratio(o.get('iops'), g.get('iops')),
                        'p99_ratio': ratio(o.get('clat_p99_us'), g.get('clat_p99_us')),
                        'ios_per_cpu_s_ratio': ratio(o.get('ios_per_target_cpu_s'), g.get('ios_per_target_cpu_s'))})
    return out


def base_comparisons(runs):
    """Pair ours with base (another build of ours, OURS_BASE) for the same LU and job. With
    --reps N, repetition k of ours is paired with repetition k of base (they ran back to back),
    and each ratio is the median of the N paired ratios, with their range."""
    by = {}
    for r in runs:
        by.setdefault((r['target'], r['lu'], r['job']), {})[r.get('rep', 1)] = r
    out = []
    for (t, lu, job), orep in sorted(by.items(), key=lambda kv: (kv[0][1], next(iter(kv[1].values()))['rw'],
                                                                  next(iter(kv[1].values()))['bs'],
                                                                  next(iter(kv[1].values()))['iodepth'])):
        brep = by.get(('base', lu, job))
        if t != 'ours' or brep is None:
            continue
        pairs = [(orep[k], brep[k]) for k in sorted(orep) if k in brep]

        def paired(key):
            rs = [ratio(o.get(key), b.get(key)) for o, b in pairs]
            rs = [x for x in rs if x is not None]
            return (round(median(rs), 2) if rs else None), (min(rs) if rs else None), (max(rs) if rs else None)

        iops, iops_lo, iops_hi = paired('iops')
        cpu, cpu_lo, cpu_hi = paired('ios_per_target_cpu_s')
        c = {'lu': lu, 'job': job, 'pairs': len(pairs),
             'iops_ratio': iops, 'iops_ratio_range': [iops_lo, iops_hi],
             'p99_ratio': paired('clat_p99_us')[0],
             'ios_per_cpu_s_ratio': cpu, 'ios_per_cpu_s_ratio_range': [cpu_lo, cpu_hi],
             'cpu_us_per_io_ours': median(o.get('cpu_us_per_io') for o, _ in pairs),
             'cpu_us_per_io_base': median(b.get('cpu_us_per_io') for _, b in pairs),
             'ctxt_per_io_ours': median(o.get('ctxt_per_io') for o, _ in pairs),
             'ctxt_per_io_base': median(b.get('ctxt_per_io') for _, b in pairs)}
        c['worse'] = any(v is not None and v < 0.95 for v in (c['iops_ratio'], c['ios_per_cpu_s_ratio']))
        out.append(c)
    return out


def curve_over_null(runs):
    """Pair each target's curve LU with its null LU for the same job: what the Curve path costs
    on top of the iSCSI path (CPU and context switches per I/O, latency)."""
    by = {(r['target'], r['lu'], r['job']): r for r in runs}
    out = []
    for (t, lu, job), c in sorted(by.items(), key=lambda kv: (kv[0][0], kv[1]['rw'], kv[1]['bs'], kv[1]['iodepth'])):
        n = by.get((t, 'null', job))
        if lu != 'curve' or n is None:
            continue

        def diff(k):
            a, b = c.get(k), n.get(k)
            return round(a - b, 2) if a is not None and b is not None else None

        out.append({'target': t, 'job': job,
                    'cpu_us_per_io_null': n.get('cpu_us_per_io'), 'cpu_us_per_io_curve': c.get('cpu_us_per_io'),
                    'cpu_us_per_io_added': diff('cpu_us_per_io'),
                    'ctxt_per_io_null': n.get('ctxt_per_io'), 'ctxt_per_io_curve': c.get('ctxt_per_io'),
                    'ctxt_per_io_added': diff('ctxt_per_io'),
                    'clat_p50_us_added': diff('clat_p50_us'), 'clat_p99_us_added': diff('clat_p99_us'),
                    'cluster_cs_cpu_us_per_io': c.get('cluster_cs_cpu_us_per_io')})
    return out


def write_tsv(path, runs):
    with open(path, 'w') as f:
        f.write('\t'.join(FIELDS) + '\n')
        for r in runs:
            f.write('\t'.join('' if r.get(k) is None else str(r.get(k)) for k in FIELDS) + '\n')


def chart(path, runs):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return 'matplotlib not installed: no chart'
    pts = [r for r in runs if r['bs'] == '4k' and r.get('iops') is not None]
    if not pts:
        return 'no 4k runs: no chart'
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    series = sorted({(r['target'], r['lu'], r['rw']) for r in pts})
    for t, lu, rw in series:
        s = sorted((r for r in pts if (r['target'], r['lu'], r['rw']) == (t, lu, rw)), key=lambda r: r['iodepth'])
        qd = [r['iodepth'] for r in s]
        style = {'ours': '-', 'base': ':'}.get(t, '--')
        marker = 'o' if rw == 'randread' else 's'
        label = f'{t} {lu} {rw}'
        ax1.plot(qd, [r['iops'] for r in s], style, marker=marker, label=label)
        ax2.plot(qd, [r['clat_p99_us'] for r in s], style, marker=marker, label=label)
    depths = sorted({r['iodepth'] for r in pts})
    for ax, title, yl in ((ax1, '4 KiB IOPS vs iodepth', 'IOPS'), (ax2, '4 KiB p99 completion latency', 'p99 clat (µs)')):
        ax.set_xscale('log', base=2)
        ax.set_xticks(depths, [str(q) for q in depths])
        ax.set_xlabel('iodepth (one fio session)')
        ax.set_ylabel(yl)
        ax.set_title(title)
        ax.grid(True, which='both', alpha=0.3)
    ax2.set_yscale('log')
    ax1.legend(fontsize=7)
    fig.suptitle('curve-tgt (ours, solid; base build, dotted) vs Debian tgt (dashed)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None


def per_io_md(runs, con):
    """The per-I/O cost tables: every run, then curve over null."""
    L = []
    rows = [r for r in runs if r.get('cpu_us_per_io') is not None]
    if not rows:
        return L
    L.append('## Per-I/O cost\n')
    L.append('"CPU µs/IO" is target CPU (utime+stime, all threads) per I/O; "cs/IO" is the target\'s '
             'context switches (voluntary + involuntary, summed over `/proc/<pid>/task/*/status`) per '
             'I/O; both over the whole fio run (login and ramp included) divided by fio\'s IOPS. '
             '"Curve CS µs/IO" is the CPU the cluster\'s three chunk servers spent per I/O (curve LU '
             'only): what Curve costs, not us. CPU per I/O is the figure to trust on a busy machine; '
             'p50/p99 (fio clat, µs) move with the load.\n')
    L.append('| target | lu | job | IOPS | CPU µs/IO | cs/IO | p50 | p99 | Curve CS µs/IO |')
    L.append('|---|---|---|---:|---:|---:|---:|---:|---:|')
    for r in sorted(rows, key=lambda r: (r['rw'], r['bs'], r['iodepth'], r['target'], r['lu'])):
        L.append(f'| {r["target"]} | {r["lu"]} | {r["job"]} | {fmt(r.get("iops"))} | '
                 f'{fmt(r["cpu_us_per_io"], 1)} | {fmt(r.get("ctxt_per_io"), 2)} | '
                 f'{fmt(r.get("clat_p50_us"), 1)} | {fmt(r.get("clat_p99_us"), 1)} | '
                 f'{fmt(r.get("cluster_cs_cpu_us_per_io"), 1)} |')
    L.append('')
    if con:
        L.append('### Curve over null\n')
        L.append('The same target and job on the curve LU and on the null LU: the null LU is the iSCSI '
                 'path alone, so "added" is what the Curve client path costs on top of it (CPU and '
                 'context switches per I/O in the target, fio latency).\n')
        L.append('| target | job | CPU µs/IO null | curve | added | cs/IO null | curve | added | '
                 'p50 added | p99 added | Curve CS µs/IO |')
        L.append('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
        for c in con:
            L.append(f'| {c["target"]} | {c["job"]} | {fmt(c["cpu_us_per_io_null"], 1)} | '
                     f'{fmt(c["cpu_us_per_io_curve"], 1)} | {fmt(c["cpu_us_per_io_added"], 1)} | '
                     f'{fmt(c["ctxt_per_io_null"], 2)} | {fmt(c["ctxt_per_io_curve"], 2)} | '
                     f'{fmt(c["ctxt_per_io_added"], 2)} | {fmt(c["clat_p50_us_added"], 1)} | '
                     f'{fmt(c["clat_p99_us_added"], 1)} | {fmt(c["cluster_cs_cpu_us_per_io"], 1)} |')
        L.append('')
    return L


def report_md(d, meta, runs, tcp, comps, chart_note, base=None, con=None):
    L = []
    L.append(f'# Benchmark {os.path.basename(os.path.abspath(d))}\n')
    L.append(f'Mode: {meta.get("mode", "compare")}; targets: {meta.get("targets", "?")}; '
             f'fio {meta.get("duration_s")} s per job after a {meta.get("ramp_s")} s ramp'
             + (f'; every job {meta["reps"]} times per target, figures are medians' if meta.get('reps', '1') != '1' else '')
             + '.\n')
    L.append('## Machine and versions\n')
    for k in ('date_utc', 'host', 'cpu_model', 'cpus_online', 'mem_total', 'os', 'kernel', 'governor',
              'optmem_max', 'fio', 'libiscsi', 'iperf3', 'tgt_version', 'ours_version', 'base_version',
              'target_cpus', 'fio_cpus', 'backing_file', 'file_size'):
        if k in meta:
            L.append(f'- {k}: {meta[k]}')
    L.append('')
    L.append('## Target-side iSCSI settings (tgtadm --op show --mode target --tid N)\n')
    L.append('What the target offers or enforces. The values a session negotiated are not visible '
             'with the tools used here (libiscsi does not print them); the MaxQueueCmd line is '
             'the command window the target grants.\n')
    keys = ('MaxRecvDataSegmentLength', 'MaxXmitDataSegmentLength', 'FirstBurstLength', 'MaxBurstLength',
            'ImmediateData', 'InitialR2T', 'HeaderDigest', 'DataDigest', 'MaxOutstandingR2T', 'MaxQueueCmd')
    pdir = os.path.join(d, 'meta')
    files = sorted(n for n in os.listdir(pdir) if n.startswith('params-')) if os.path.isdir(pdir) else []
    if files:
        L.append('| setting | ' + ' | '.join(f[7:-4] for f in files) + ' |')
        L.append('|---|' + '---|' * len(files))
        vals = []
        for f in files:
            kv = dict(line.strip().split('=', 1) for line in open(os.path.join(pdir, f)) if '=' in line)
            vals.append(kv)
        for k in keys:
            L.append(f'| {k} | ' + ' | '.join(v.get(k, '–') for v in vals) + ' |')
        L.append('')

    busy = [r for r in runs if r['loadavg1_before'] > 0.5]
    if busy:
        L.append(f'**Warning: the machine was not idle** ({len(busy)} of {len(runs)} runs started with a '
                 f'1-minute load average above 0.5, up to {max(r["loadavg1_before"] for r in runs):.2f}). '
                 'Treat these numbers as noisy; ratios from runs next to each other are the least affected.\n')
    L.append('## Results\n')
    L.append('IOPS and MB/s from fio; clat percentiles in µs; "CPU" is the average number of target '
             'cores busy during the fio run (utime+stime of all target threads over the run, login '
             'and ramp included); "IO/CPU-s" is IOPS divided by that (IOs per target CPU-second); '
             '"fio%" is fio\'s own CPU use (near 100 % means the initiator, not the target, is the '
             'limit); "load" is the 1-minute load average before the run.\n')
    L.append('| target | lu | job | IOPS | MB/s | p50 | p99 | p99.9 | CPU | IO/CPU-s | fio% | load |')
    L.append('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for r in sorted(runs, key=lambda r: (r['lu'], r['rw'], r['bs'], r['iodepth'], r['target'])):
        if 'error' in r:
            L.append(f'| {r["target"]} | {r["lu"]} | {r["job"]} | error: {r["error"]} |||||||||')
            continue
        L.append(f'| {r["target"]} | {r["lu"]} | {r["job"]} | {fmt(r["iops"])} | {fmt(r["mb_s"], 1)} | '
                 f'{fmt(r["clat_p50_us"], 1)} | {fmt(r["clat_p99_us"], 1)} | {fmt(r["clat_p999_us"], 1)} | '
                 f'{fmt(r["target_cores_busy"], 2)} | {fmt(r["ios_per_target_cpu_s"])} | '
                 f'{fmt(r["fio_cpu_pct"], 0)} | {fmt(r["loadavg1_before"], 2)} |')
    L.append('')
    L.extend(per_io_md(runs, con))
    own = [r for r in runs if r.get('intarget_p50_us') is not None]
    if own:
        L.append('### In-target latency (ours)\n')
        L.append('From our tgtd\'s own per-LU histograms (`tgtadm --op stat`, a fresh LU per job, so '
                 'the ramp is included): command PDU arrival to status PDU handed to the socket. '
                 'The rest of fio\'s clat is the initiator and the loopback network.\n')
        L.append('| lu | job | cmds | target p50 | fio p50 | target p99 | fio p99 | target share of p50 |')
        L.append('|---|---|---:|---:|---:|---:|---:|---:|')
        for r in sorted(own, key=lambda r: (r['lu'], r['rw'], r['bs'], r['iodepth'])):
            L.append(f'| {r["lu"]} | {r["job"]} | {fmt(r["intarget_cmds"])} | {fmt(r["intarget_p50_us"], 1)} | '
                     f'{fmt(r.get("clat_p50_us"), 1)} | {fmt(r["intarget_p99_us"], 1)} | '
                     f'{fmt(r.get("clat_p99_us"), 1)} | '
                     f'{fmt(ratio(r["intarget_p50_us"], r.get("clat_p50_us")), 2)} |')
        L.append('')
    L.append('## ours / tgt\n')
    if comps:
        L.append('Ratios above 1 mean ours is higher (better for IOPS and IO/CPU-s, worse for p99).\n')
        L.append('| lu (ours vs tgt) | job | IOPS | p99 | IO/CPU-s |')
        L.append('|---|---|---:|---:|---:|')
        for c in comps:
            L.append(f'| {c["lu_ours"]} vs {c["lu_tgt"]} | {c["job"]} | {fmt(c["iops_ratio"], 2)} | '
                     f'{fmt(c["p99_ratio"], 2)} | {fmt(c["ios_per_cpu_s_ratio"], 2)} |')
    else:
        L.append('No pairs: only one target was measured in this run.')
    L.append('')
    if base:
        L.append('## ours / base (OURS_BASE)\n')
        L.append('Ratios above 1 mean ours is higher. A job is flagged when ours is more than 5% '
                 'worse in IOPS or IO/CPU-s. With --reps N each ratio is the median of N pairs of runs '
                 'made back to back (order alternating), the range in brackets.\n')
        L.append('| lu | job | pairs | IOPS | (range) | p99 | IO/CPU-s | (range) | CPU µs/IO ours | base | '
                 'cs/IO ours | base | |')
        L.append('|---|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---|')

        def rng(r):
            return f'{fmt(r[0], 2)}–{fmt(r[1], 2)}' if r and r[0] is not None else '–'
        for c in base:
            L.append(f'| {c["lu"]} | {c["job"]} | {c["pairs"]} | {fmt(c["iops_ratio"], 2)} | '
                     f'{rng(c["iops_ratio_range"])} | {fmt(c["p99_ratio"], 2)} | '
                     f'{fmt(c["ios_per_cpu_s_ratio"], 2)} | {rng(c["ios_per_cpu_s_ratio_range"])} | '
                     f'{fmt(c.get("cpu_us_per_io_ours"), 1)} | '
                     f'{fmt(c.get("cpu_us_per_io_base"), 1)} | {fmt(c.get("ctxt_per_io_ours"), 2)} | '
                     f'{fmt(c.get("ctxt_per_io_base"), 2)} | {"**>5% worse**" if c["worse"] else ""} |')
        L.append('')
    if tcp:
        L.append('## Loopback TCP baseline (iperf3, one stream, pinned like target and fio)\n')
        L.append('send-*: the sender is pinned to the target CPUs (the direction of iSCSI read data); '
                 'recv-*: the sender is pinned to the fio CPUs (write data). -l 128K / 1M writes.\n')
        L.append('| stream | MB/s |')
        L.append('|---|---:|')
        for k, v in tcp.items():
            L.append(f'| {k} | {fmt(v, 1)} |')
        L.append('')
        L.append('Large reads as a fraction of the TCP baseline with the same write size:\n')
        L.append('| target | lu | job | MB/s | TCP MB/s | fraction |')
        L.append('|---|---|---|---:|---:|---:|')
        for r in runs:
            base = {'128k': tcp.get('send-128k'), '1m': tcp.get('send-1m')}.get(r['bs'])
            if r['rw'] == 'read' and base and r.get('mb_s') is not None:
                L.append(f'| {r["target"]} | {r["lu"]} | {r["job"]} | {fmt(r["mb_s"], 1)} | {fmt(base, 1)} | '
                         f'{fmt(ratio(r["mb_s"], base), 2)} |')
        L.append('')
    scale = [r for r in runs if r['job'].startswith('scale-')]
    if scale:
        L.append(f'## Scaling ({meta.get("targets", "ours")}, --cores N)\n')
        L.append('| job | IOPS | IOPS per target core | cores busy |')
        L.append('|---|---:|---:|---:|')
        for r in scale:
            n = int(r['job'].split('cores')[1].split('-')[0])
            L.append(f'| {r["job"]} | {fmt(r.get("iops"))} | {fmt(r["iops"] / n if r.get("iops") else None)} | '
                     f'{fmt(r["target_cores_busy"], 2)} |')
        L.append('')
    bad = [r for r in runs if r.get('fio_rc') != '0' or r.get('fio_errors') or 'error' in r]
    if bad:
        L.append('## Problems\n')
        for r in bad:
            L.append(f'- {r["target"]} {r["lu"]} {r["job"]}: fio exit {r.get("fio_rc")}, '
                     f'errors {r.get("fio_errors")} {r.get("error", "")} (see {r["fio_json"]}.log)')
        L.append('')
    L.append('![IOPS and p99 vs iodepth](chart.png)' if not chart_note else f'Chart: {chart_note}')
    L.append('')
    return '\n'.join(L)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    meta = read_meta(d)
    every, tcp = collect(d)
    base = base_comparisons(every)
    runs = medians(every)
    comps = comparisons(runs)
    con = curve_over_null(runs)
    with open(os.path.join(d, 'results.json'), 'w') as f:
        json.dump({'meta': meta, 'runs': runs, 'every_run': every, 'tcp_mb_s': tcp, 'ours_vs_tgt': comps, 'ours_vs_base': base,
                   'curve_over_null': con}, f, indent=1)
    write_tsv(os.path.join(d, 'results.tsv'), runs)
    note = chart(os.path.join(d, 'chart.png'), runs)
    with open(os.path.join(d, 'report.md'), 'w') as f:
        f.write(report_md(d, meta, runs, tcp, comps, note, base, con))
    print(f'wrote {d}/results.json results.tsv report.md' + ('' if note else ' chart.png'))


if __name__ == '__main__':
    main()
