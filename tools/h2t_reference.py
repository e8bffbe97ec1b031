#!/usr/bin/env python3
"""Numpy reference of h2t-store's Head2Toe training numerics (Sources/H2TTrain).

Same algorithm, same hyper-parameters, float64 throughout:
  * per-tap unit-L2 normalisation (a zero slice stays zero);
  * lambda_max at W = 0 with the log-prior bias;
  * group lasso (mean cross-entropy + lambda * sum_i ||W_i||_2, bias free) by working-set FISTA:
    backtracking on L (doubling), function-value restart, exact group soft-threshold,
    KKT check over all rows, strong-rule start, doubling working set;
  * scores ||W_i||^2, ties by gradient norm then index; top floor(D * fraction + 1e-9);
  * kept subset re-normalised per tap, each tap then weighted by its training share (the RMS over
    training rows of the kept subset's norm in the per-tap normalised features); final head by
    FISTA on cross-entropy + mu/2 ||W||^2; the shares folded into the head's weight rows, so the
    head applies to the plain re-normalised subset;
  * the training-constant alternative (KeptTapScaling.trainingConstant): each kept column is its raw
    value over one constant per tap, the RMS over training rows of the tap's full L2 norm; the
    constants are folded in (W rows / c_t), so the head applies to the raw selected columns.

Usage:
  h2t_reference.py fixtures OUT.swift   regenerate Tests/H2TTrainTests/ReferenceFixtures.swift
  h2t_reference.py fit DIR               time one fit on DIR/x.npy, y.npy, meta.json; prints JSON
  h2t_reference.py sweep DIR             time the default CV sweep (also DIR/folds.npy); prints JSON
  (both used by h2t-bench train, which writes DIR)
The fixture is committed so that the Swift tests do not depend on python at test time; rerun
this script after changing the algorithm and commit the regenerated file.
"""
import json
import sys
import time

import numpy as np


def normalize_taps(x, taps):
    x = x.copy()
    for _, off, width in taps:
        block = x[:, off:off + width]
        norms = np.sqrt((block * block).sum(axis=1, keepdims=True))
        x[:, off:off + width] = np.where(norms > 0, block / np.where(norms > 0, norms, 1), 0)
    return x


def subset_taps(taps, columns):
    out, pos = [], 0
    for name, off, width in taps:
        start = pos
        while pos < len(columns) and columns[pos] < off + width:
            pos += 1
        if pos > start:
            out.append((name, start, pos - start))
    return out


def tap_shares(xn, columns, taps, rows):
    """Per kept tap: RMS over `rows` of the kept subset's L2 norm in the per-tap normalised xn."""
    sub = subset_taps(taps, columns)
    xs = xn[np.ix_(rows, columns)]
    return np.array([np.sqrt((xs[:, off:off + w] ** 2).sum(axis=1).mean()) for _, off, w in sub])


def training_constants(x_raw, columns, taps, rows):
    """Per kept tap: RMS over `rows` of the tap's full L2 norm in the raw x (1 where that is 0)."""
    out = []
    for name, _, _ in subset_taps(taps, columns):
        _, off, w = next(t for t in taps if t[0] == name)
        rms = np.sqrt((x_raw[np.ix_(rows, range(off, off + w))] ** 2).sum(axis=1).mean())
        out.append(rms if rms > 0 else 1.0)
    return np.array(out)


def scale_taps(x, sub, scales):
    x = x.copy()
    for (_, off, w), s in zip(sub, scales):
        x[:, off:off + w] *= s
    return x


def softmax_ce(z, y):
    """Mean cross-entropy and its gradient with respect to the logits."""
    n = z.shape[0]
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=1, keepdims=True)
    value = float(np.mean(np.log(s[:, 0]) - (z[np.arange(n), y] - zmax[:, 0])))
    g = e / s
    g[np.arange(n), y] -= 1
    return value, g / n


def prior_bias(y, k):
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return np.log(np.maximum(counts, 0.5) / max(len(y), 1))


def group_soft_threshold(w, t):
    norms = np.sqrt((w * w).sum(axis=1, keepdims=True))
    scale = np.where(norms > t, 1 - t / np.where(norms > 0, norms, 1), 0)
    return w * scale


def fista(x, y, k, w, b, penalty, max_iter, tol):
    """FISTA with backtracking and function restart. penalty: ('group', lam) | ('ridge', mu)."""
    n, d = x.shape
    kind, strength = penalty

    def pen(w):
        if kind == 'group':
            return strength * np.sqrt((w * w).sum(axis=1)).sum()
        return 0.5 * strength * (w * w).sum()

    def prox(w, step):
        if kind == 'group':
            return group_soft_threshold(w, step * strength)
        return w / (1 + step * strength)

    L = ((x * x).sum() / n + 1) / (2 * k) if n > 0 else 1.0
    xw, xb = w.copy(), b.copy()
    zx = x @ xw + xb
    fx_all = softmax_ce(zx, y)[0] + pen(xw)
    yw, yb, zy = xw.copy(), xb.copy(), zx.copy()
    t, momentum, restarts, iters, converged, attempts = 1.0, False, 0, 0, False, 0
    while iters < max_iter and attempts < 4 * max_iter:
        attempts += 1
        fy, g = softmax_ce(zy, y)
        gw, gb = x.T @ g, g.sum(axis=0)
        while True:
            nw = prox(yw - gw / L, 1 / L)
            nb = yb - gb / L
            zn = x @ nw + nb
            fn = softmax_ce(zn, y)[0]
            dz = zn - zy
            quad = ((nw - yw) ** 2).sum() + ((nb - yb) ** 2).sum()
            if fn <= fy + (g * dz).sum() + 0.5 * L * quad + 1e-6 * abs(fy) or L > 1e12:
                break
            L *= 2
        fn_all = fn + pen(nw)
        if fn_all > fx_all and momentum:
            restarts += 1
            t, momentum = 1.0, False
            yw, yb, zy = xw.copy(), xb.copy(), zx.copy()
            continue
        iters += 1
        change = np.sqrt(((nw - xw) ** 2).sum() + ((nb - xb) ** 2).sum())
        size = np.sqrt((nw ** 2).sum() + (nb ** 2).sum())
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        beta = (t - 1) / t_next
        yw, yb, zy = nw + beta * (nw - xw), nb + beta * (nb - xb), zn + beta * (zn - zx)
        xw, xb, zx, fx_all = nw, nb, zn, fn_all
        t, momentum = t_next, True
        if change <= tol * max(size, 1e-30):
            converged = True
            break
    return xw, xb, dict(iterations=iters, objective=fx_all, converged=converged, restarts=restarts)


def lambda_max(x, y, k):
    b = prior_bias(y, k)
    _, g = softmax_ce(np.tile(b, (x.shape[0], 1)), y)
    norms = np.sqrt(((x.T @ g) ** 2).sum(axis=1))
    return float(norms.max()), norms, b


def group_lasso_path(x, y, k, lambdas, inner_iter=2000, inner_tol=1e-4, kkt_tol=1e-2, max_outer=20, growth=64):
    n, d = x.shape
    lmax, prev_norms, b = lambda_max(x, y, k)
    prev_lambda = lmax
    w = np.zeros((d, k))
    active = []
    out = []
    for lam in sorted(lambdas, reverse=True):
        active_set = set(active)
        cut = 2 * lam - prev_lambda
        cand = [i for i in range(d) if i not in active_set and prev_norms[i] >= cut and prev_norms[i] > 0]
        cand.sort(key=lambda i: (-prev_norms[i], i))
        ws = sorted(active + cand[:max(growth, len(active))])
        outer, converged, norms = 0, False, prev_norms
        while outer < max_outer:
            outer += 1
            xw = x[:, ws]
            coef, b, rep = fista(xw, y, k, w[ws], b, ('group', lam), inner_iter, inner_tol)
            w[ws] = coef
            _, g = softmax_ce(xw @ coef + b, y)
            norms = np.sqrt(((x.T @ g) ** 2).sum(axis=1))
            in_ws = set(ws)
            viol = [i for i in range(d) if i not in in_ws and norms[i] > lam * (1 + kkt_tol)]
            if not viol:
                converged = rep['converged']
                break
            viol.sort(key=lambda i: (-norms[i], i))
            ws = sorted(ws + viol[:max(growth, len(ws))])
        active = [i for i in range(d) if np.any(w[i] != 0)]
        out.append(dict(lam=lam, w=w.copy(), b=b.copy(), grad_norms=norms.copy(), outer=outer, converged=converged))
        prev_norms, prev_lambda = norms, lam
    return out


def ranking(w, grad_norms):
    scores = (w * w).sum(axis=1)
    # np.lexsort sorts by the last key first: score desc, gradient norm desc, index asc.
    return list(np.lexsort((np.arange(len(scores)), -grad_norms, -scores)))


def keep_count(d, fraction):
    return max(1, min(d, int(np.floor(d * fraction + 1e-9))))


def final_head(x, y, k, mu=1e-4, max_iter=1000, tol=1e-5):
    w = np.zeros((x.shape[1], k))
    return fista(x, y, k, w, prior_bias(y, k), ('ridge', mu), max_iter, tol)


def fit(x_train, y_train, x_test, taps, k, lam_ratio, fraction, **gl):
    xn = normalize_taps(x_train, taps)
    lmax = lambda_max(xn, y_train, k)[0]
    sol = group_lasso_path(xn, y_train, k, [lam_ratio * lmax], **gl)[-1]
    order = ranking(sol['w'], sol['grad_norms'])
    cols = sorted(order[:keep_count(xn.shape[1], fraction)])
    sub = subset_taps(taps, cols)
    shares = tap_shares(xn, cols, taps, np.arange(len(y_train)))
    xs = scale_taps(normalize_taps(xn[:, cols], sub), sub, shares)
    w, b, rep = final_head(xs, y_train, k)
    w = scale_taps(w.T, sub, shares).T  # folded: the head applies to the re-normalised subset
    pred = None
    if x_test is not None:
        xt = normalize_taps(normalize_taps(x_test, taps)[:, cols], sub)
        pred = np.argmax(xt @ w + b, axis=1)
    return dict(lmax=lmax, solution=sol, columns=cols, shares=shares, w=w, b=b, report=rep, pred=pred)


def swift_floats(a):
    return '[' + ', '.join('%.9g' % v for v in np.asarray(a, dtype=np.float64).ravel()) + ']'


def write_fixtures(out_path):
    rng = np.random.default_rng(20261127)
    n, n_test, k = 60, 30, 3
    widths = [5, 7, 4, 8]
    d = sum(widths)
    taps, off = [], 0
    for i, wd in enumerate(widths):
        taps.append(('tap%d' % i, off, wd))
        off += wd
    y_all = np.arange(n + n_test) % k
    rng.shuffle(y_all)
    x_all = np.abs(rng.normal(size=(n + n_test, d)))
    informative = [1, 6, 13, 17, 20]
    means = np.maximum(rng.normal(size=(k, len(informative))), 0) * 1.5
    x_all[:, informative] += means[y_all]
    x_all = x_all.astype(np.float32).astype(np.float64)  # what Swift sees
    x, y, xt, yt = x_all[:n], y_all[:n], x_all[n:], y_all[n:]
    tight = dict(inner_iter=20000, inner_tol=1e-9, kkt_tol=0.0)
    ratios = [0.5, 0.2]
    xn = normalize_taps(x, taps)
    lmax = lambda_max(xn, y, k)[0]
    path = group_lasso_path(xn, y, k, [r * lmax for r in ratios], **tight)
    fraction = 0.25
    res = fit(x, y, xt, taps, k, ratios[-1], fraction, **tight)
    sub = subset_taps(taps, res['columns'])
    head_w, head_b, head_rep = final_head(scale_taps(normalize_taps(xn[:, res['columns']], sub), sub, res['shares']), y, k,
                                          max_iter=20000, tol=1e-9)
    head_w = scale_taps(head_w.T, sub, res['shares']).T
    # Training-constant scaling of the same selection: raw / c_t, then W rows / c_t (folded).
    constants = training_constants(x, res['columns'], taps, np.arange(n))
    const_w, const_b, const_rep = final_head(scale_taps(x[:, res['columns']], sub, 1 / constants), y, k,
                                             max_iter=20000, tol=1e-9)
    const_w = scale_taps(const_w.T, sub, 1 / constants).T
    const_pred = np.argmax(xt[:, res['columns']] @ const_w + const_b, axis=1)
    lines = [
        '// Generated by tools/h2t_reference.py fixtures; do not edit. Regenerate after changing the algorithm.',
        '// Float64 numpy reference of Sources/H2TTrain on a small planted problem.',
        'enum ReferenceFixture {',
        '    static let rows = %d' % n,
        '    static let testRows = %d' % n_test,
        '    static let columns = %d' % d,
        '    static let classCount = %d' % k,
        '    static let tapWidths: [Int] = %s' % str(widths),
        '    static let train: [Float] = %s' % swift_floats(x),
        '    static let trainLabels: [Int] = %s' % str([int(v) for v in y]),
        '    static let test: [Float] = %s' % swift_floats(xt),
        '    static let testLabels: [Int] = %s' % str([int(v) for v in yt]),
        '    static let normalizedTrain: [Float] = %s' % swift_floats(xn),
        '    static let lambdaMax: Double = %.12g' % lmax,
        '    static let lambdaRatios: [Double] = %s' % str(ratios),
    ]
    for i, sol in enumerate(path):
        lines.append('    static let pathWeights%d: [Float] = %s' % (i, swift_floats(sol['w'])))
        lines.append('    static let pathBias%d: [Float] = %s' % (i, swift_floats(sol['b'])))
    lines += [
        '    static let fraction = %r' % fraction,
        '    static let selected: [Int] = %s' % str([int(c) for c in res['columns']]),
        '    static let keptTapShares: [Float] = %s' % swift_floats(res['shares']),
        '    static let headWeights: [Float] = %s' % swift_floats(head_w),
        '    static let headBias: [Float] = %s' % swift_floats(head_b),
        '    static let headObjective: Double = %.15g' % head_rep['objective'],
        '    static let testPredictions: [Int] = %s' % str([int(p) for p in res['pred']]),
        '    static let trainingConstants: [Float] = %s' % swift_floats(constants),
        '    static let constantHeadWeights: [Float] = %s' % swift_floats(const_w),
        '    static let constantHeadBias: [Float] = %s' % swift_floats(const_b),
        '    static let constantHeadObjective: Double = %.15g' % const_rep['objective'],
        '    static let constantTestPredictions: [Int] = %s' % str([int(p) for p in const_pred]),
        '}',
    ]
    with open(out_path, "w") as f:
        f.write('\n'.join(lines) + '\n')


def kernel_head(gram, y, k, mu=1e-4, max_iter=1000, tol=1e-5):
    """The final head in kernel form (W = X^T A), same iterates as the primal ridge FISTA."""
    n = len(y)
    a, b = np.zeros((n, k)), prior_bias(y, k)
    L = (np.trace(gram) / n + 1) / (2 * k)
    def sqnorm(da, db, dz):
        return max((da * (dz - db)).sum(), 0) + (db * db).sum()
    xa, xb = a, b
    zx = gram @ xa + xb
    fx_all = softmax_ce(zx, y)[0] + 0.5 * mu * (sqnorm(xa, xb, zx) - (xb * xb).sum())
    ya, yb, zy = xa.copy(), xb.copy(), zx.copy()
    t, momentum, iters, attempts = 1.0, False, 0, 0
    while iters < max_iter and attempts < 4 * max_iter:
        attempts += 1
        fy, g = softmax_ce(zy, y)
        while True:
            na = (ya - g / L) / (1 + mu / L)
            nb = yb - g.sum(axis=0) / L
            zn = gram @ na + nb
            fn = softmax_ce(zn, y)[0]
            dz = zn - zy
            if fn <= fy + (g * dz).sum() + 0.5 * L * sqnorm(na - ya, nb - yb, dz) + 1e-6 * abs(fy) or L > 1e12:
                break
            L *= 2
        fn_all = fn + 0.5 * mu * (sqnorm(na, nb, zn) - (nb * nb).sum())
        if fn_all > fx_all and momentum:
            t, momentum = 1.0, False
            ya, yb, zy = xa.copy(), xb.copy(), zx.copy()
            continue
        iters += 1
        change = np.sqrt(sqnorm(na - xa, nb - xb, zn - zx))
        size = np.sqrt(sqnorm(na, nb, zn))
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        beta = (t - 1) / t_next
        ya, yb, zy = na + beta * (na - xa), nb + beta * (nb - xb), zn + beta * (zn - zx)
        xa, xb, zx, fx_all, t, momentum = na, nb, zn, fn_all, t_next, True
        if change <= tol * max(size, 1e-30):
            break
    return xa, xb


def head_accuracy(x, y, train, val, k, ridges):
    """Train one final head per ridge on rows `train` of x (kernel form when wider than tall, one
    Gram matrix for all ridges), score each on `val`."""
    xt = x[train]
    gram = xt @ xt.T if x.shape[1] > len(train) else None
    correct = []
    for mu in ridges:
        if gram is not None:
            a, b = kernel_head(gram, y[train], k, mu)
            w = xt.T @ a
        else:
            w, b, _ = final_head(xt, y[train], k, mu)
        correct.append(int((np.argmax(x[val] @ w + b, axis=1) == y[val]).sum()))
    return np.array(correct)


def cv_sweep(x, y, taps, k, folds, fractions, ratios, ridges, probe_tap):
    """The default sweep of Head2ToeFit.run on one feature set: head2toe grid, all features, probe."""
    xn = normalize_taps(x, taps)
    table = {}
    for f in range(folds.max() + 1):
        train, val = np.where(folds != f)[0], np.where(folds == f)[0]
        xtr = xn[train]
        lmax = lambda_max(xtr, y[train], k)[0]
        path = group_lasso_path(xtr, y[train], k, [r * lmax for r in ratios])
        for r, sol in zip(sorted(ratios, reverse=True), path):
            order = ranking(sol['w'], sol['grad_norms'])
            for fr in fractions:
                cols = sorted(order[:keep_count(xn.shape[1], fr)])
                sub = subset_taps(taps, cols)
                xs = scale_taps(normalize_taps(xn[:, cols], sub), sub, tap_shares(xn, cols, taps, train))
                table[(r, fr)] = table.get((r, fr), 0) + head_accuracy(xs, y, train, val, k, ridges)
        table['all'] = table.get('all', 0) + head_accuracy(xn, y, train, val, k, ridges)
        name, off, width = [t for t in taps if t[0] == probe_tap][0]
        table['probe'] = table.get('probe', 0) + head_accuracy(xn[:, off:off + width], y, train, val, k, ridges)
    # Each grid point's accuracy at its best ridge, as Head2ToeFit.run chooses.
    return {str(key): float(v.max()) / len(y) for key, v in table.items()}


def bench(directory, mode):
    x = np.load(directory + '/x.npy').astype(np.float64)
    y = np.load(directory + '/y.npy').astype(np.int64)
    meta = json.load(open(directory + '/meta.json'))
    taps = [(t['name'], t['offset'], t['width']) for t in meta['taps']]
    k = meta['classCount']
    start, cpu_start = time.perf_counter(), time.process_time()
    if mode == 'fit':
        res = fit(x, y, None, taps, k, meta['lambdaRatio'], meta['fraction'])
        out = dict(selected=[int(c) for c in res['columns']], outer=res['solution']['outer'],
                   head_iterations=res['report']['iterations'])
    else:
        folds = np.load(directory + '/folds.npy').astype(np.int64)
        out = dict(cv=cv_sweep(x, y, taps, k, folds, meta['fractions'], meta['lambdas'],
                               meta['ridges'], meta['probeTap']))
    out['seconds'] = time.perf_counter() - start
    out['cpu_seconds'] = time.process_time() - cpu_start
    print(json.dumps(out))


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == 'fixtures':
        write_fixtures(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] in ('fit', 'sweep'):
        bench(sys.argv[2], sys.argv[1])
    else:
        sys.exit(__doc__)
