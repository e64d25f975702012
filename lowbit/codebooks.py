"""Codebook designs: Lloyd-Max quantizers for known distributions, and NormalFloat (NF2..NF8).

Every design returns a :class:`lowbit.formats.Codebook` (levels rounded to float32) and is
computed by lowbit in float64 from closed forms, once per process (cached):

======================================  ==================================================
design                                  levels
======================================  ==================================================
``lloyd_max(bits, "gaussian")``         MSE-optimal 2**bits levels for N(0, 1)
``lloyd_max(bits, "sphere", dim=d)``    MSE-optimal levels for one coordinate of a uniformly
                                        random unit vector in R^d (d >= 2): density
                                        (1 - t^2)^((d-3)/2) / B(1/2, (d-1)/2) on [-1, 1],
                                        the distribution a random rotation gives every
                                        coordinate of a unit vector (TurboQuant's setting);
                                        close to N(0, 1/d) for large d
``normal_float(bits)``                  NF<bits> of QLoRA (Dettmers et al. 2023): normal
                                        quantiles, an exact zero, scaled to [-1, 1]
======================================  ==================================================

**Lloyd-Max** (Lloyd 1957, Max 1960): for levels l_0 < ... < l_{n-1} and a density f, the
mean squared error is minimal only where every threshold is the midpoint of its neighbours,
t_i = (l_i + l_{i+1}) / 2, and every level is the conditional mean of its cell,
l_i = E[X | t_{i-1} < X <= t_i] (t_{-1}, t_{n-1} the ends of the support).  The iteration
alternates the two conditions from quantile-spaced levels, keeping the levels symmetric,
until no level moves by more than 1e-14 of the distribution's standard deviation.  Cell
masses and first moments are closed forms: the normal CDF (``math.erfc``) and density for the
Gaussian; for the sphere, the regularized incomplete beta function I_u((d-1)/2, (d-1)/2) at
u = (1 + t) / 2 (continued fraction) and the moment (1 - t^2)^((d-1)/2) / ((d-1) B(1/2, (d-1)/2)).

**NormalFloat** (k = bits): with the offset δ_k = (1 − 1/(2(2^k − 1)) + 1 − 1/2^(k+1)) / 2,
2^(k−1) positive values Φ^-1(p) at p = k+1 points evenly spaced from δ_k to 1/2 (the last
dropped), 2^(k−1) − 1 negative values −Φ^-1(p) at 2^(k−1) points from δ_k to 1/2 (the last
dropped), and 0; all divided by the largest.  This is the construction of bitsandbytes'
``create_normal_map`` (QLoRA's NF4), whose offset 0.9677083 is δ_4 (the mean of
1 − 1/30 and 1 − 1/32); NF2, NF3 and NF5..NF8 use the same rule at their width (bitsandbytes
ships NF4 only).  ``tests/test_codebook.py`` checks NF4 against its 16 published values.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from lowbit.formats import Codebook

#: Distributions :func:`lloyd_max` designs for.
DISTRIBUTIONS = ("gaussian", "sphere")
#: Codebook names :func:`resolve` accepts (besides a Codebook record).
NAMES = ("nf2", "nf3", "nf4", "lloyd-max-gaussian", "lloyd-max-sphere")

_SQRT1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# -- the standard normal distribution -------------------------------------------------------------

def normal_upper(x: float) -> float:
    """P(X > x) for X ~ N(0, 1), accurate in the upper tail."""
    return 0.5 * math.erfc(x * _SQRT1_2)


def normal_density(x: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x) if math.isfinite(x) else 0.0


def normal_ppf(p: float) -> float:
    """Φ^-1(p) for 0 < p < 1, to a few float64 ulp (Halley's iteration on ``math.erfc``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p!r}")
    if p > 0.5:
        return -normal_ppf(1.0 - p)  # exact: 1 - p for p in (1/2, 1) (Sterbenz)
    # start: Abramowitz & Stegun 26.2.23 (|error| < 4.5e-4) in the lower tail
    t = math.sqrt(-2.0 * math.log(p))
    x = -(t - (2.515517 + 0.802853 * t + 0.010328 * t * t)
          / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t ** 3))
    for _ in range(8):
        e = (normal_upper(-x) - p) / normal_density(x)  # (Φ(x) - p) / φ(x)
        step = e / (1.0 + 0.5 * x * e)
        x -= step
        if abs(step) <= 1e-16 * max(1.0, abs(x)):
            break
    return x


# -- the coordinate of a random unit vector in R^d ------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), x < (a+1)/(a+b+2)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 3e-16:
            return h
    raise RuntimeError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def beta_inc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0, 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


class _Gaussian:
    lo, hi, std = -math.inf, math.inf, 1.0

    def upper(self, t: float) -> float:
        return normal_upper(t)

    def density(self, t: float) -> float:
        return normal_density(t)

    def moment(self, a: float, b: float) -> float:
        """∫_a^b t f(t) dt."""
        return normal_density(a) - normal_density(b)

    def start(self, n: int) -> list[float]:
        return [normal_ppf((i + 0.5) / n) for i in range(n)]


class _Sphere:
    lo, hi = -1.0, 1.0

    def __init__(self, dim: int) -> None:
        self.alpha = (dim - 1) / 2.0
        self.std = 1.0 / math.sqrt(dim)
        # 1 / ((d - 1) B(1/2, (d-1)/2))
        self.moment_scale = math.exp(math.lgamma(self.alpha + 0.5) - math.lgamma(0.5)
                                     - math.lgamma(self.alpha)) / (2.0 * self.alpha)

    def upper(self, t: float) -> float:
        """P(T > t): (1 - T) / 2 ~ Beta(alpha, alpha)."""
        if t >= 1.0:
            return 0.0
        if t <= -1.0:
            return 1.0
        if t >= 0.0:
            return beta_inc(self.alpha, self.alpha, (1.0 - t) / 2.0)
        return 1.0 - beta_inc(self.alpha, self.alpha, (1.0 + t) / 2.0)

    def density(self, t: float) -> float:
        """(1 - t^2)^(alpha - 1) / B(1/2, alpha), alpha = (d - 1) / 2."""
        return 2.0 * self.alpha * self.moment_scale * math.exp((self.alpha - 1.0) * math.log1p(-t * t))

    def moment(self, a: float, b: float) -> float:
        def g(t: float) -> float:
            return 0.0 if abs(t) >= 1.0 else math.exp(self.alpha * math.log1p(-t * t))

        return self.moment_scale * (g(a) - g(b))

    def start(self, n: int) -> list[float]:
        # normal quantiles at the sphere's scale, squeezed into (-1, 1) (strictly increasing)
        return [math.tanh(normal_ppf((i + 0.5) / n) * self.std) for i in range(n)]


def _mass(dist: Any, a: float, b: float) -> float:
    """P(a < X <= b), from the tail on the side away from zero (no cancellation near the ends)."""
    if a >= 0.0:
        return dist.upper(a) - dist.upper(b)
    if b <= 0.0:
        return dist.upper(-b) - dist.upper(-a)  # symmetric distributions
    return 1.0 - dist.upper(-a) - dist.upper(b)


def _centroids(dist: Any, levels: list[float]) -> tuple[list[float], list[float], list[float]]:
    """(cell edges, cell masses, conditional means) of the cells that ``levels`` define."""
    n = len(levels)
    edges = [dist.lo] + [(levels[i] + levels[i + 1]) / 2 for i in range(n - 1)] + [dist.hi]
    mass = [_mass(dist, edges[i], edges[i + 1]) for i in range(n)]
    means = [dist.moment(edges[i], edges[i + 1]) / mass[i] for i in range(n)]
    means = [(means[i] - means[n - 1 - i]) / 2 for i in range(n)]  # exact symmetry
    return edges, mass, means


def _newton_step(dist: Any, levels: list[float]) -> list[float]:
    """One Newton step on F(l) = l - centroids(l) = 0 (tridiagonal Jacobian, solved densely).

    d c_i / d t_i = f(t_i) (t_i - c_i) / P_i and d c_i / d t_{i-1} = f(t_{i-1}) (c_i - t_{i-1}) / P_i
    for the cell mass P_i, with t_i = (l_i + l_{i+1}) / 2.
    """
    n = len(levels)
    edges, mass, means = _centroids(dist, levels)
    jac = np.eye(n)
    for i in range(n):
        if i > 0:
            g = dist.density(edges[i]) * (means[i] - edges[i]) / mass[i] / 2
            jac[i, i - 1] -= g
            jac[i, i] -= g
        if i < n - 1:
            g = dist.density(edges[i + 1]) * (edges[i + 1] - means[i]) / mass[i] / 2
            jac[i, i + 1] -= g
            jac[i, i] -= g
    resid = np.array(levels) - np.array(means)
    step = np.linalg.solve(jac, resid)
    new = [float(v) for v in np.array(levels) - step]
    return [(new[i] - new[n - 1 - i]) / 2 for i in range(n)]


def lloyd_max_levels(dist: Any, n: int, *, tol: float = 1e-12, max_iter: int = 500) -> list[float]:
    """float64 Lloyd-Max levels of ``n`` cells for a symmetric distribution (module docs).

    Solves the fixed point l = centroids(l) by damped Newton steps from quantile-spaced
    levels (step 1, 1/2, ... 1/16, the first that keeps the levels sorted and lowers the
    residual), falling back to a plain Lloyd step (l <- centroids(l)); converged when no
    level differs from its cell's conditional mean by more than ``tol`` standard deviations,
    or, once float64 rounding of the cell integrals stops the residual from falling (many
    levels, large d), when it has stayed above its best for 8 steps and that best is within
    ``1e-9`` standard deviations (far below the float32 rounding of the stored levels).
    """
    levels = np.array(dist.start(n))
    best, best_levels, stalled = math.inf, list(levels), 0
    for _ in range(max_iter):
        _, _, means = _centroids(dist, list(levels))
        resid = float(np.max(np.abs(np.array(means) - levels)))
        if resid <= tol * dist.std:
            return means
        if resid < best:
            best, best_levels, stalled = resid, means, 0
        else:
            stalled += 1
            if stalled >= 8 and best <= 1e-9 * dist.std:
                return best_levels
        nxt = np.array(means)
        try:
            step = np.array(_newton_step(dist, list(levels))) - levels
        except (ZeroDivisionError, np.linalg.LinAlgError, OverflowError):
            step = None
        for lam in (1.0, 0.5, 0.25, 0.125, 0.0625):
            if step is None:
                break
            trial = levels + lam * step
            if trial[0] > dist.lo and trial[-1] < dist.hi and bool(np.all(np.diff(trial) > 0)):
                _, _, tm = _centroids(dist, list(trial))
                if float(np.max(np.abs(np.array(tm) - trial))) < resid:
                    nxt = trial
                    break
        levels = nxt
    raise RuntimeError(f"Lloyd-Max iteration did not converge in {max_iter} steps")


def _check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 2 <= dim <= 1 << 20:
        raise ValueError(f"dim must be an integer in 2..{1 << 20}, got {dim!r}")
    return int(dim)


def _check_bits(bits: Any, lo: int, hi: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not lo <= bits <= hi:
        raise ValueError(f"bits must be an integer in {lo}..{hi}, got {bits!r}")
    return int(bits)


def lloyd_max(bits: int, distribution: str = "gaussian", *, dim: int | None = None) -> Codebook:
    """The MSE-optimal 2**bits-level codebook for ``distribution`` (cached per process).

    Parameters
    ----------
    bits : int
        1..8 (2 to 256 levels).
    distribution : {"gaussian", "sphere"}
        N(0, 1), or one coordinate of a uniformly random unit vector in R^dim.
    dim : int
        The dimension d for ``"sphere"`` (2 .. 2**20); not allowed for ``"gaussian"``.

    Raises
    ------
    ValueError
        Bad ``bits``, ``distribution`` or ``dim``.

    Examples
    --------
    >>> from lowbit.codebooks import lloyd_max
    >>> [round(v, 4) for v in lloyd_max(2).levels]    # Max (1960), Table I
    [-1.5104, -0.4528, 0.4528, 1.5104]
    """
    bits = _check_bits(bits, 1, 8)
    if distribution == "gaussian":
        if dim is not None:
            raise ValueError(f"dim applies to distribution='sphere' only, got dim={dim!r}")
        return _lloyd_max_cached(bits, "gaussian", 0)
    if distribution == "sphere":
        if dim is None:
            raise ValueError("distribution='sphere' needs dim (the vector length)")
        return _lloyd_max_cached(bits, "sphere", _check_dim(dim))
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")


@functools.lru_cache(maxsize=256)
def _lloyd_max_cached(bits: int, distribution: str, dim: int) -> Codebook:
    if distribution == "gaussian":
        dist: Any = _Gaussian()
        name, what = f"lloyd-max-gaussian-b{bits}", "N(0, 1)"
    else:
        dist = _Sphere(dim)
        name = f"lloyd-max-sphere{dim}-b{bits}"
        what = f"a coordinate of a uniformly random unit vector in R^{dim}"
    return Codebook(name, bits, tuple(lloyd_max_levels(dist, 1 << bits)), what)


def normal_float_offset(bits: int) -> float:
    """δ_k of the module docs: 0.96770833... for NF4."""
    k = _check_bits(bits, 2, 8)
    return ((1.0 - 1.0 / (2 * ((1 << k) - 1))) + (1.0 - 1.0 / (1 << (k + 1)))) / 2.0


@functools.lru_cache(maxsize=8)
def normal_float(bits: int) -> Codebook:
    """NF<bits> (2..8): QLoRA's NormalFloat construction (module docs), levels in [-1, 1]."""
    k = _check_bits(bits, 2, 8)
    delta = normal_float_offset(k)
    half = 1 << (k - 1)
    pos = [normal_ppf(float(p)) for p in np.linspace(delta, 0.5, half + 1)[:-1]]
    neg = [-normal_ppf(float(p)) for p in np.linspace(delta, 0.5, half)[:-1]]
    top = max(pos)
    levels = sorted([v / top for v in pos] + [0.0] + [v / top for v in neg])
    return Codebook(f"nf{k}", k, tuple(levels), "N(0, 1) quantiles (NormalFloat), absmax-scaled")


def resolve(codebook: Any, *, bits: int | None = None, dim: int | None = None) -> Codebook:
    """A :class:`Codebook` from a record or a name of :data:`NAMES`.

    ``"nf2"`` .. ``"nf4"``: NormalFloat (``bits`` None or equal); ``"lloyd-max-gaussian"``:
    :func:`lloyd_max` (``bits`` required; ``dim`` ignored); ``"lloyd-max-sphere"``:
    :func:`lloyd_max` for ``dim`` (``bits`` required).  A record is returned as is (``bits`` None or its own).

    Raises
    ------
    ValueError
        Unknown name, or ``bits`` missing or in conflict with the codebook.
    TypeError
        ``codebook`` is neither a Codebook nor a string.
    """
    if isinstance(codebook, Codebook):
        cb = codebook
    elif isinstance(codebook, str):
        if codebook in ("nf2", "nf3", "nf4"):
            cb = normal_float(int(codebook[2]))
        elif codebook in ("lloyd-max-gaussian", "lloyd-max-sphere"):
            if bits is None:
                raise ValueError(f"codebook={codebook!r} needs bits (1..8)")
            dist = codebook.rsplit("-", 1)[1]
            cb = lloyd_max(bits, dist, dim=dim if dist == "sphere" else None)
        else:
            raise ValueError(f"codebook must be a lowbit.formats.Codebook or one of {NAMES}, "
                             f"got {codebook!r}")
    else:
        raise TypeError(f"codebook must be a lowbit.formats.Codebook or a name in {NAMES}, "
                        f"got {type(codebook).__name__}")
    if bits is not None and bits != cb.bits:
        raise ValueError(f"bits={bits!r} conflicts with codebook {cb.name!r} ({cb.bits} bits)")
    return cb
