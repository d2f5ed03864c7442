"""Curves over a ladder: the sigmoid fit perf(C) = R0 + (A - R0) / (1 + (C_mid / C) ** B), its
parameter intervals and lack-of-fit test, the stated sigmoid-like verdict, and the table cells."""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any, Sequence

def sigmoid_curve(c, r0: float, a: float, b: float, c_mid: float):
    import numpy as np

    return r0 + (a - r0) / (1.0 + (c_mid / np.asarray(c, dtype=float)) ** b)


FIT_BOUNDS = ([-1.0, 0.05, 1e-3], [2.0, 20.0, 1e7])  # A, B, C_mid
MAX_JACOBIAN_CONDITION = 1e8


def fit_sigmoid(xs: Sequence[float], ys: Sequence[float], r0: float) -> dict[str, Any] | None:
    """Least-squares A, B, C_mid with R0 fixed, R^2, and 95% parameter intervals (``ci95``);
    None with fewer than 3 points or no convergence."""
    import numpy as np
    from scipy.optimize import curve_fit

    if len(xs) < 3:
        return None
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    guess = [float(ys.max()), 1.0, float(np.median(xs))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # flat ladders leave curve_fit's covariance undefined
            (a, b, c_mid), _ = curve_fit(lambda c, a, b, m: sigmoid_curve(c, r0, a, b, m), xs, ys, p0=guess,
                                         bounds=FIT_BOUNDS, maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    predicted = sigmoid_curve(xs, r0, a, b, c_mid)
    total = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1.0 - float(((ys - predicted) ** 2).sum()) / total if total > 0 else float("nan")
    estimates = {"A": float(a), "B": float(b), "C_mid": float(c_mid)}
    return {"R0": r0, **estimates, "R2": r2, "ci95": parameter_intervals(xs, ys, r0, estimates)}


def sigmoid_jacobian(xs, r0: float, a: float, b: float, c_mid: float):
    """d perf / d (A, B, C_mid) at each x, in closed form: one row per x."""
    import numpy as np

    ratio = c_mid / np.asarray(xs, dtype=float)
    u = ratio ** b
    slope = -(a - r0) * u / (1.0 + u) ** 2
    return np.stack([1.0 / (1.0 + u), slope * np.log(ratio), slope * b / c_mid], axis=1)


def parameter_intervals(xs, ys, r0: float, estimates: dict[str, float]) -> dict[str, list[float] | None]:
    """Wald 95% intervals: estimate +- t(points - 3) * standard error, the covariance being
    SSR / (points - 3) * (J^T J)^-1 at the estimate.

    All None where they are undefined: no residual degrees of freedom, a Jacobian of rank < 3
    in float64 (condition > 1e8: a flat ladder, where A = R0 leaves B and C_mid free, or a
    step so sharp that one rung decides all three), or an estimate stuck on its bound:
    the constrained optimum is no stationary point, so the linearisation behind the
    covariance fails for every parameter, not only that one."""
    import numpy as np
    from scipy.stats import t

    dof = len(xs) - len(estimates)
    jacobian = sigmoid_jacobian(xs, r0, *estimates.values())
    _, singular, right = np.linalg.svd(jacobian, full_matrices=False)
    # past a condition number of 1e8, (J^T J)^-1 (condition 1e16) is rounding noise in float64
    if dof < 1 or on_bound(estimates) or singular[-1] <= MAX_JACOBIAN_CONDITION ** -1 * singular[0]:
        return {name: None for name in estimates}
    residuals = np.asarray(ys, dtype=float) - sigmoid_curve(xs, r0, *estimates.values())
    covariance = float(residuals @ residuals) / dof * (right.T / singular**2) @ right
    half = float(t.ppf(0.975, dof)) * np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    return {name: [value - h, value + h] for (name, value), h in zip(estimates.items(), half.tolist())}


def on_bound(estimates: dict[str, float]) -> str | None:
    """The first of A, B, C_mid that sits on its fitting bound (within 0.1%), or None."""
    for (name, value), low, high in zip(estimates.items(), *FIT_BOUNDS):
        if math.isclose(value, low, rel_tol=1e-3) or math.isclose(value, high, rel_tol=1e-3):
            return name
    return None
LACK_OF_FIT_ALPHA = 0.05
SIGMOID_MIN_R2 = 0.8  # the rule for one seed per rung, where no replicate spread can judge the fit


def lack_of_fit(fit: dict[str, Any], rungs: Sequence[tuple[float, Sequence[float]]]) -> dict[str, Any] | None:
    """F test of the curve against the seeds' spread within rungs: F = (SS_lof / (k - 3)) /
    (SS_pe / (N - k)), SS_lof = sum over rungs of n_i (mean_i - curve_i)^2, SS_pe = sum of
    (score - mean_i)^2, for k rungs and N scores. None without a degree of freedom on either
    side (one seed per rung, or 3 rungs) or with seeds that agree exactly."""
    import numpy as np
    from scipy.stats import f

    counts = np.array([len(scores) for _, scores in rungs], dtype=float)
    means = np.array([statistics.fmean(scores) for _, scores in rungs])
    dof_lof, dof_pe = len(rungs) - 3, int(counts.sum()) - len(rungs)
    pure_error = sum(float(((np.asarray(scores) - m) ** 2).sum()) for (_, scores), m in zip(rungs, means))
    if dof_lof < 1 or dof_pe < 1 or pure_error == 0.0:
        return None
    curve = sigmoid_curve([x for x, _ in rungs], fit["R0"], fit["A"], fit["B"], fit["C_mid"])
    lof = float((counts * (means - curve) ** 2).sum())
    statistic = (lof / dof_lof) / (pure_error / dof_pe)
    return {"F": statistic, "p": float(f.sf(statistic, dof_lof, dof_pe)), "dof": [dof_lof, dof_pe]}


def curve_shape(fit: dict[str, Any] | None, rungs: Sequence[tuple[float, Sequence[float]]]) -> dict[str, Any]:
    """Is the ladder sigmoid-like? ``sigmoid_like`` True / False / None (undecided) and ``why``.

    Sigmoid-like means: every estimate inside its bounds, a rise (some rung's t-interval over
    seeds and A's 95% interval above R0) whose midpoint lies within the ladder, and rung means
    that stay within the seeds' spread of the curve (lack-of-fit p >= 0.05); with no seed
    spread (one seed per rung), R^2 >= 0.8 stands in for the last test. Undecided when the
    rungs do not bracket the midpoint or the intervals are undefined."""
    if not fit:
        return {"sigmoid_like": None, "why": "no fit (under 3 rungs, or it did not converge)"}
    stuck = on_bound({k: fit[k] for k in ("A", "B", "C_mid")})
    if stuck:
        return {"sigmoid_like": False, "why": f"{stuck} sits on its fitting bound ({fit[stuck]:.4g}): no inner optimum"}
    if fit["A"] <= fit["R0"]:
        return {"sigmoid_like": False, "why": f"no rise: the plateau A {fit['A']:.3f} is not above R0 {fit['R0']:.3f}"}
    intervals = [ci for ci in (t_interval(scores) for _, scores in rungs) if ci is not None]
    if intervals and all(low <= fit["R0"] <= high for low, high in intervals):
        return {"sigmoid_like": False, "why": f"no rise beyond noise: every rung's 95% t-interval over seeds "
                                              f"contains R0 {fit['R0']:.3f}"}
    xs = [x for x, _ in rungs]
    if not min(xs) <= fit["C_mid"] <= max(xs):
        return {"sigmoid_like": None, "why": f"the midpoint C_mid {fit['C_mid']:.3g} lies outside the ladder "
                                             f"({min(xs):g}-{max(xs):g}): the rungs do not bracket the rise"}
    a_ci = (fit.get("ci95") or {}).get("A")
    if a_ci is None:
        return {"sigmoid_like": None, "why": "the fit's intervals are undefined (too few rungs, or a Jacobian of "
                                             "rank < 3)"}
    if a_ci[0] <= fit["R0"]:
        return {"sigmoid_like": False, "why": f"no rise beyond noise: A's interval [{a_ci[0]:.3f}, {a_ci[1]:.3f}] "
                                              f"reaches R0 {fit['R0']:.3f}"}
    test = lack_of_fit(fit, rungs)
    if test is None:
        ok = fit["R2"] >= SIGMOID_MIN_R2
        return {"sigmoid_like": ok, "why": f"no seed spread to test against, judged by R^2 {fit['R2']:.2f} "
                                           f"{'>=' if ok else '<'} {SIGMOID_MIN_R2}"}
    ok = test["p"] >= LACK_OF_FIT_ALPHA
    return {"sigmoid_like": ok, "lack_of_fit": test,
            "why": (f"rises to A {fit['A']:.3f} [{a_ci[0]:.3f}, {a_ci[1]:.3f}] and the rung means "
                    + ("stay" if ok else "do not stay") + " within the seeds' spread of the curve "
                    f"(lack-of-fit F {test['F']:.2f}, p {test['p']:.2g}, dof {test['dof'][0]}/{test['dof'][1]})")}


def shape_line(recipe: str, shape: dict[str, Any]) -> str:
    verdict = {True: "yes", False: "no", None: "undecided"}[shape["sigmoid_like"]]
    return f"{recipe} sigmoid-like? {verdict}: {shape['why']}"


def fit_cells(fit: dict[str, Any] | None) -> list[str]:
    """Markdown cells A, B, C_mid (each with its 95% interval) and R^2 of a fit."""
    if not fit:
        return ["-"] * 4
    intervals = fit.get("ci95") or {}

    def cell(name: str) -> str:
        ci = intervals.get(name)
        return f"{fit[name]:.3f} " + (f"[{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "[undefined]")

    return [cell("A"), cell("B"), cell("C_mid"), f"{fit['R2']:.3f}"]


def t_interval(scores: Sequence[float]) -> list[float] | None:
    """95% Student-t interval of the mean over seeds (None with one seed)."""
    from scipy.stats import t

    if len(scores) < 2:
        return None
    mean, half = statistics.fmean(scores), t.ppf(0.975, len(scores) - 1) * statistics.stdev(scores) / len(scores) ** 0.5
    return [mean - half, mean + half]


def smallest_matching(rl_points: Sequence[tuple[int, float]], target: float, tolerance: float) -> int | None:
    """The smallest ladder value whose RL score is within ``tolerance`` of ``target``."""
    for value, score in sorted(rl_points):
        if score >= target - tolerance:
            return value
    return None
