#!/usr/bin/env python3
"""Reference values for worker/src/transferability.rs (LogME, LEEP, NCE).

A deliberately plain NumPy implementation written from the papers' definitions, independent
of the Rust code's decomposition tricks:

* LogME (You et al., ICML 2021): for each class, Bayesian linear regression of the one-hot
  column y on the features F with prior w ~ N(0, alpha^-1 I) and noise N(0, beta^-1). The
  evidence is maximised over (alpha, beta) by the MacKay fixed-point iteration
      gamma = D - alpha * tr(A^-1),   A = alpha I + beta F^T F
      m     = beta A^-1 F^T y
      alpha <- gamma / m^T m,   beta <- (n - gamma) / ||y - F m||^2
  starting from alpha = beta = 1, at most 11 updates, stopping after the first update whose
  relative change is below 1e-3 for both alpha and beta. The log evidence at the final
  (alpha, beta) (with m recomputed there) is
      L = D/2 ln alpha + n/2 ln beta - alpha/2 m^T m - beta/2 ||F m - y||^2
          - 1/2 ln det A - n/2 ln(2 pi)
  Here A is inverted explicitly and ln det A comes from slogdet; no SVD/eigendecomposition.
  LogME is the mean of L / n over the classes that occur in the labels.
  Note: with the sinusoid features below (unrelated to the labels) the evidence is maximised at
  alpha -> infinity, so most of those classes stop at the 11-update cap, not by convergence; their
  constants pin the cap too (one update more moves L/n by up to ~1e-3). The offset, informative
  and shuffled cases converge. Every stopping decision is at least 1% away from the tolerance.
* LEEP (Nguyen et al., ICML 2020): empirical joint P(y, z) = 1/n sum_i theta_z(x_i) [y_i = y],
  P(y | z) = P(y, z) / P(z), LEEP = 1/n sum_i ln sum_z P(y_i | z) theta_z(x_i).
* NCE (Tran et al., ICCV 2019): z_i = argmax_z theta_z(x_i), NCE = sum_{y,z} P(y,z) ln P(y|z)
  from the empirical counts.

The inputs are built from closed-form formulas (no random generator) so that the Rust tests
rebuild exactly the same arrays. Run with
    /root/.cache/explore/torch-venv/bin/python bench/reference/transferability.py
and paste the printed constants into the `tests` module of worker/src/transferability.rs.
"""

import math

import numpy as np

MAX_ITERATIONS = 11
TOLERANCE = 1e-3


# ----------------------------------------------------------------------------- inputs


def labels_formula(n, num_classes):
    return np.array([(i * 7 + i // 3) % num_classes for i in range(n)], dtype=np.int64)


def features_formula(n, d):
    f = np.empty((n, d))
    for i in range(n):
        for j in range(d):
            f[i, j] = math.sin(0.37 * ((i + 1) * (j + 2))) + 0.1 * math.cos(1.3 * i - 0.7 * j)
    return f


def rank_deficient_features(n):
    """Five columns, the last two linear combinations of the first three (rank 3)."""
    base = features_formula(n, 3)
    f = np.empty((n, 5))
    f[:, :3] = base
    f[:, 3] = base[:, 0]
    f[:, 4] = base[:, 1] - 0.5 * base[:, 2]
    return f


def informative_features(labels, num_classes):
    """One-hot of the label plus a small deterministic perturbation, plus one noise column."""
    n = len(labels)
    d = num_classes + 1
    f = np.empty((n, d))
    for i in range(n):
        for j in range(d):
            hot = 1.0 if j == labels[i] else 0.0
            f[i, j] = hot + 0.05 * math.sin(0.37 * ((i + 1) * (j + 2)))
    return f


def permutation(n):
    """i -> (7 i + 3) mod n, a bijection when gcd(7, n) = 1."""
    assert math.gcd(7, n) == 1
    return np.array([(7 * i + 3) % n for i in range(n)], dtype=np.int64)


def softmax_probs(n, z):
    logits = np.empty((n, z))
    for i in range(n):
        for k in range(z):
            logits[i, k] = 2.0 * math.sin(0.5 * ((i + 1) * (k + 1))) + math.cos(0.3 * (i * k) + 0.2 * k)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def zero_column_probs(n, z):
    """Positive weights in every column but the last, which is exactly zero; rows normalised."""
    p = np.zeros((n, z))
    for i in range(n):
        for k in range(z - 1):
            p[i, k] = 1.5 + math.sin(0.9 * i + 1.7 * k)
    return p / p.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- scores


def logme_one_class(f, y):
    n, d = f.shape
    ftf = f.T @ f
    fty = f.T @ y
    eye = np.eye(d)

    def posterior(alpha, beta):
        a = alpha * eye + beta * ftf
        a_inv = np.linalg.inv(a)
        m = beta * (a_inv @ fty)
        # gamma = D - alpha tr(A^-1), written as beta tr(A^-1 F^T F) (the same quantity, since
        # I - alpha A^-1 = beta A^-1 F^T F): the difference form cancels catastrophically when
        # alpha runs off to infinity (uninformative features), e.g. gamma ~ 4e-9 came out with a
        # relative error of 2e-7 and reached exactly 0 (alpha = 0, A singular) after 18 updates.
        gamma = beta * float(np.sum(a_inv * ftf))
        r = y - f @ m
        return a, m, gamma, float(m @ m), float(r @ r)

    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        _, _, gamma, mm, res = posterior(alpha, beta)
        new_alpha = gamma / mm
        new_beta = (n - gamma) / res
        change = max(abs(new_alpha - alpha) / alpha, abs(new_beta - beta) / beta)
        # Another implementation (rounding ~1e-12) must take the same branch.
        assert abs(change / TOLERANCE - 1.0) > 1e-6, f"stopping test too close to call: {change}"
        converged = change < TOLERANCE
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    a, _, _, mm, res = posterior(alpha, beta)
    sign, logdet = np.linalg.slogdet(a)
    assert sign > 0
    evidence = (
        0.5 * d * math.log(alpha)
        + 0.5 * n * math.log(beta)
        - 0.5 * alpha * mm
        - 0.5 * beta * res
        - 0.5 * logdet
        - 0.5 * n * math.log(2.0 * math.pi)
    )
    # The same evidence as the Gaussian marginal y ~ N(0, I / beta + F F^T / alpha).
    cov = np.eye(n) / beta + (f @ f.T) / alpha
    sign, logdet_cov = np.linalg.slogdet(cov)
    assert sign > 0
    direct = -0.5 * (logdet_cov + float(y @ np.linalg.solve(cov, y)) + n * math.log(2.0 * math.pi))
    assert abs(direct - evidence) <= 1e-9 * abs(evidence), (direct, evidence)
    return evidence / n


def logme(f, labels, num_classes):
    scores = []
    for k in range(num_classes):
        y = (labels == k).astype(np.float64)
        if y.sum() == 0:
            continue
        scores.append(logme_one_class(f, y))
    return float(np.mean(scores))


def leep(theta, labels, num_classes):
    n, z = theta.shape
    joint = np.zeros((num_classes, z))
    for i in range(n):
        joint[labels[i]] += theta[i] / n
    marginal = joint.sum(axis=0)
    cond = np.zeros_like(joint)
    for k in range(z):
        if marginal[k] > 0:
            cond[:, k] = joint[:, k] / marginal[k]
    total = 0.0
    for i in range(n):
        total += math.log(float(cond[labels[i]] @ theta[i]))
    return total / n


def nce(theta, labels, num_classes):
    n, z = theta.shape
    order = np.sort(theta, axis=1)
    # The hard labels must not depend on how ties or near-ties are broken.
    assert np.all(order[:, -1] - order[:, -2] > 1e-9), "near-tie in argmax"
    hard = theta.argmax(axis=1)
    counts = np.zeros((num_classes, z))
    for i in range(n):
        counts[labels[i], hard[i]] += 1
    marginal = counts.sum(axis=0)
    total = 0.0
    for y in range(num_classes):
        for k in range(z):
            if counts[y, k] > 0:
                total += counts[y, k] / n * math.log(counts[y, k] / marginal[k])
    return total


# ----------------------------------------------------------------------------- main


def main():
    out = []

    def emit(name, value, what):
        out.append((name, value, what))

    c = 3
    emit("LOGME_TALL", logme(features_formula(40, 6), labels_formula(40, c), c), "n=40 D=6 C=3")
    emit("LOGME_WIDE", logme(features_formula(12, 20), labels_formula(12, c), c), "n=12 D=20 C=3")
    emit("LOGME_SQUARE", logme(features_formula(10, 10), labels_formula(10, 4), 4), "n=10 D=10 C=4")
    emit(
        "LOGME_OFFSET_TALL",
        logme(features_formula(50, 8) + 1.0, labels_formula(50, c), c),
        "n=50 D=8 features+1 C=3",
    )
    emit(
        "LOGME_OFFSET_WIDE",
        logme(features_formula(15, 24) + 1.0, labels_formula(15, c), c),
        "n=15 D=24 features+1 C=3",
    )
    emit(
        "LOGME_RANK_DEFICIENT",
        logme(rank_deficient_features(30), labels_formula(30, c), c),
        "n=30 D=5 rank 3 C=3",
    )
    y = labels_formula(30, c)
    inf = informative_features(y, c)
    emit("LOGME_INFORMATIVE", logme(inf, y, c), "n=30 D=4 one-hot+perturbation C=3")
    emit(
        "LOGME_SHUFFLED",
        logme(inf, y[permutation(30)], c),
        "same features, labels[i] = labels[(7i+3)%30]",
    )
    emit("LEEP_SOFTMAX", leep(softmax_probs(25, 5), labels_formula(25, c), c), "n=25 Z=5 C=3")
    emit("NCE_SOFTMAX", nce(softmax_probs(25, 5), labels_formula(25, c), c), "n=25 Z=5 C=3")
    emit(
        "LEEP_ZERO_COLUMN",
        leep(zero_column_probs(20, 6), labels_formula(20, 4), 4),
        "n=20 Z=6 (last column 0) C=4",
    )
    emit(
        "NCE_ZERO_COLUMN",
        nce(zero_column_probs(20, 6), labels_formula(20, 4), 4),
        "n=20 Z=6 (last column 0) C=4",
    )

    for name, value, what in out:
        print(f"/// {what}")
        print(f"const {name}: f64 = {value:.12g};")


if __name__ == "__main__":
    main()
