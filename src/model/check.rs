//! Numeric comparison for tests and reference checks: one `Tolerance` type (absolute + relative,
//! as in burn's test suite) instead of epsilons scattered through tests, and a central
//! finite-difference helper for gradient checks.

use std::fmt;

/// `|actual - expected| <= abs + rel · |expected|`, element by element. NaN never passes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

/// Summary of a passing comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    pub n: usize,
    pub max_abs_diff: f64,
    /// Largest `|a - e| / max(|e|, tiny)`.
    pub max_rel_diff: f64,
}

/// Why a comparison failed, with the worst element.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    pub what: String,
    pub msg: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.msg)
    }
}

impl std::error::Error for Mismatch {}

impl Tolerance {
    pub const fn new(abs: f64, rel: f64) -> Tolerance {
        Tolerance { abs, rel }
    }

    pub fn accepts(&self, expected: f64, actual: f64) -> bool {
        (actual - expected).abs() <= self.abs + self.rel * expected.abs()
    }

    /// Compares two equally long sequences; the error names the first failing index, the worst
    /// one and both values.
    pub fn check<E, A>(&self, what: &str, expected: E, actual: A) -> Result<Comparison, Mismatch>
    where
        E: IntoIterator,
        E::Item: Into<f64>,
        A: IntoIterator,
        A::Item: Into<f64>,
    {
        let e: Vec<f64> = expected.into_iter().map(Into::into).collect();
        let a: Vec<f64> = actual.into_iter().map(Into::into).collect();
        let mismatch = |msg: String| Mismatch {
            what: what.to_string(),
            msg,
        };
        if e.len() != a.len() {
            return Err(mismatch(format!(
                "expected {} values, got {}",
                e.len(),
                a.len()
            )));
        }
        let mut cmp = Comparison {
            n: e.len(),
            max_abs_diff: 0.0,
            max_rel_diff: 0.0,
        };
        let mut fails = 0usize;
        let mut first_fail = None;
        let mut worst = (0usize, 0.0f64);
        for (i, (&x, &y)) in e.iter().zip(&a).enumerate() {
            let d = (y - x).abs();
            let d = if d.is_nan() { f64::INFINITY } else { d };
            cmp.max_abs_diff = cmp.max_abs_diff.max(d);
            cmp.max_rel_diff = cmp.max_rel_diff.max(d / x.abs().max(1e-30));
            let excess = d - (self.abs + self.rel * x.abs());
            if excess.is_nan() || excess > 0.0 {
                fails += 1;
                first_fail.get_or_insert(i);
                if excess > worst.1 || fails == 1 {
                    worst = (i, excess);
                }
            }
        }
        match first_fail {
            None => Ok(cmp),
            Some(first) => Err(mismatch(format!(
                "{fails} of {} values outside {self:?}; first at [{first}]: expected {}, got {}; \
                 worst at [{}]: expected {}, got {}; max abs diff {:.3e}",
                e.len(),
                e[first],
                a[first],
                worst.0,
                e[worst.0],
                a[worst.0],
                cmp.max_abs_diff
            ))),
        }
    }
}

/// Central finite differences `(f(x + eps·e_i) - f(x - eps·e_i)) / 2eps` for every element of
/// `x` (restored afterwards). `f` should accumulate its scalar in f64.
pub fn finite_difference(x: &mut [f32], eps: f32, mut f: impl FnMut(&[f32]) -> f64) -> Vec<f64> {
    let mut g = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        let orig = x[i];
        x[i] = orig + eps;
        let up = f(x);
        x[i] = orig - eps;
        let down = f(x);
        x[i] = orig;
        // The actual step after rounding to f32, not the nominal one.
        let h = (orig + eps) as f64 - (orig - eps) as f64;
        g.push((up - down) / h);
    }
    g
}
