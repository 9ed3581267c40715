//! CLUB, the contrastive log-ratio upper bound of mutual information (Cheng et al., ICML 2020).
//!
//! A variational network `q(y | x) = N(μ(x), diag(exp(log σ²(x))))` is fitted to samples of
//! `(x, y)` by maximum likelihood ([`Club::learn`]); the estimate
//! `I(x; y) ≤ E_{p(x,y)}[log q(y|x)] − E_{p(x)} E_{p(y)}[log q(y|x)]`
//! ([`Club::upper_bound`]) is then differentiable in `x` and `y`, so an encoder can minimise it.
//! Both expectations are taken over the batch: the first over its pairs `(xᵢ, yᵢ)`, the second
//! over all pairs `(xᵢ, yⱼ)`, computed in `O(N · d)` from the batch mean of `y` and of `y²`.
//! The network has its own var store and optimizer (Adam), so learning `q` never moves the
//! encoder and the encoder's optimizer never moves `q`.

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, TchError, Tensor};

/// Learning rate of the variational network's Adam optimizer.
const CLUB_LEARNING_RATE: f64 = 5e-3;

/// A CLUB estimator of `I(x; y)` for `x` of `x_dim` and `y` of `y_dim` values.
#[derive(Debug)]
pub struct Club {
    _vs: nn::VarStore,
    mu: nn::Sequential,
    log_var: nn::Sequential,
    opt: nn::Optimizer,
}

impl Club {
    /// A fresh estimator on `device` with hidden layers of `hidden` units.
    pub fn new(device: Device, x_dim: i64, y_dim: i64, hidden: i64) -> Result<Club, TchError> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mu = nn::seq()
            .add(nn::linear(&root / "mu1", x_dim, hidden, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&root / "mu2", hidden, y_dim, Default::default()));
        let log_var = nn::seq()
            .add(nn::linear(&root / "lv1", x_dim, hidden, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&root / "lv2", hidden, y_dim, Default::default()))
            .add_fn(|x| x.tanh());
        let opt = nn::adam(0.9, 0.999, 0.0).build(&vs, CLUB_LEARNING_RATE)?;
        Ok(Club {
            _vs: vs,
            mu,
            log_var,
            opt,
        })
    }

    /// Mean log-likelihood of `y` given `x` under `q`, without the constant `−d/2 · log 2π`.
    pub fn log_likelihood(&self, x: &Tensor, y: &Tensor) -> Result<Tensor, TchError> {
        let mu = self.mu.forward(x);
        let log_var = self.log_var.forward(x);
        let squared = mu.f_sub(y)?.f_square()?;
        let per_dim = squared
            .f_div(&log_var.f_exp()?)?
            .f_add(&log_var)?
            .f_mul_scalar(-0.5)?;
        per_dim
            .f_sum_dim_intlist(Some([1i64].as_slice()), false, Kind::Float)?
            .f_mean(Kind::Float)
    }

    /// One maximum-likelihood step of `q` on a batch (the inputs are detached first, so only
    /// `q` learns); returns the batch's log-likelihood before the step.
    pub fn learn(&mut self, x: &Tensor, y: &Tensor) -> Result<Tensor, TchError> {
        let ll = self.log_likelihood(&x.f_detach()?, &y.f_detach()?)?;
        self.opt.zero_grad();
        ll.f_neg()?.f_backward()?;
        self.opt.step();
        ll.f_detach()
    }

    /// The CLUB estimate of `I(x; y)` on a batch, differentiable in `x` and `y`.
    pub fn upper_bound(&self, x: &Tensor, y: &Tensor) -> Result<Tensor, TchError> {
        let mu = self.mu.forward(x);
        let inv_var = self.log_var.forward(x).f_neg()?.f_exp()?;
        let positive = mu.f_sub(y)?.f_square()?;
        // mean over j of (y_j − μ_i)² = mean(y²) − 2 μ_i mean(y) + μ_i²
        let y_mean = y.f_mean_dim(Some([0i64].as_slice()), true, Kind::Float)?;
        let y_sq_mean = y
            .f_square()?
            .f_mean_dim(Some([0i64].as_slice()), true, Kind::Float)?;
        let negative = y_sq_mean
            .f_sub(&mu.f_mul(&y_mean)?.f_mul_scalar(2.0)?)?
            .f_add(&mu.f_square()?)?;
        // log q(y_i|x_i) − mean_j log q(y_j|x_i) = (negative − positive) / (2σ²)
        negative
            .f_sub(&positive)?
            .f_mul(&inv_var)?
            .f_mul_scalar(0.5)?
            .f_sum_dim_intlist(Some([1i64].as_slice()), false, Kind::Float)?
            .f_mean(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::torch_lock as lock;

    /// Fits CLUB to `(x, y)` and returns its estimate on fresh samples of the same law.
    fn estimate(dependent: bool) -> f64 {
        let cpu = (Kind::Float, Device::Cpu);
        let sample = |n: i64| {
            let x = Tensor::randn([n, 4], cpu);
            let y = if dependent {
                &x + Tensor::randn([n, 4], cpu) * 0.1
            } else {
                Tensor::randn([n, 4], cpu)
            };
            (x, y)
        };
        let mut club = Club::new(Device::Cpu, 4, 4, 32).unwrap();
        for _ in 0..600 {
            let (x, y) = sample(256);
            let _likelihood = club.learn(&x, &y).unwrap();
        }
        let (x, y) = sample(4096);
        tch::no_grad(|| f64::try_from(&club.upper_bound(&x, &y).unwrap()).unwrap())
    }

    #[test]
    fn the_estimate_is_near_zero_for_independent_inputs_and_large_for_dependent_ones() {
        let _guard = lock();
        tch::manual_seed(3);
        let independent = estimate(false);
        let dependent = estimate(true);
        // y = x + 0.1·noise in 4 dimensions: I = 4 · ½ ln(1 + 1/0.01) ≈ 9.2 nats
        assert!(independent.abs() < 0.2, "independent: {independent}");
        assert!(dependent > 4.0, "dependent: {dependent}");
    }

    #[test]
    fn the_batch_formula_equals_the_mean_over_all_pairs() {
        let _guard = lock();
        tch::manual_seed(5);
        let club = Club::new(Device::Cpu, 3, 2, 8).unwrap();
        let x = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
        let fast = f64::try_from(&club.upper_bound(&x, &y).unwrap()).unwrap();
        // the definition, pair by pair: log q(y_i|x_i) − mean_j log q(y_j|x_i), constants cancel
        let mut slow = 0.0;
        for i in 0..5 {
            let xi = x.narrow(0, i, 1);
            let yi = y.narrow(0, i, 1);
            let own = f64::try_from(&club.log_likelihood(&xi, &yi).unwrap()).unwrap();
            let mut others = 0.0;
            for j in 0..5 {
                let yj = y.narrow(0, j, 1);
                others += f64::try_from(&club.log_likelihood(&xi, &yj).unwrap()).unwrap();
            }
            slow += own - others / 5.0;
        }
        slow /= 5.0;
        assert!(
            (fast - slow).abs() < 1e-4,
            "batch formula {fast} vs pairwise {slow}"
        );
    }
}
