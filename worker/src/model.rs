//! Builds a libtorch network from a [`Genome`].
//!
//! The semantics follow `explore_common::genome` exactly: convolutions use padding
//! `kernel / 2`, the given stride and a bias; batch-norm is 2-D on feature maps and 1-D on
//! vectors; pooling uses window = stride = `size` with floor rounding; global average pooling
//! turns `[N, C, H, W]` into `[N, C]`; residual blocks compute `x + body(x)`; dropout is active in
//! training only; dense layers flatten a feature map first. The head flattens (if needed) and
//! maps to `num_classes` logits.
//!
//! Variable names are stable and derived from block positions, so a child genome can inherit
//! its parent's weights wherever names and shapes match: top-level block `i` lives under `b{i}`,
//! block `j` of a residual body under `b{i}.r{j}` (nested bodies add further `r{k}`), the head
//! under `head`. Each layer names its tensors like PyTorch (`weight`, `bias`, `running_mean`,
//! `running_var`), e.g. `b4.weight` or `b3.r1.bias`.
//!
//! [`build_with`] varies two things for the training objectives (see [`crate::objective`]): the
//! head ([`Head::Linear`]; ELR mode's scale-invariant [`Head::Cosine`], which has no bias and
//! stores its scale as the untrained tensor `head.scale` so a checkpoint says which head it
//! needs; or the disentangle objective's [`Head::Split`], whose `split.*` tensors say the same),
//! and an optimizer group for the scale-invariant weights
//! ([`Genome::scale_invariant_weights`] and the cosine head's weight).

use std::collections::HashSet;

use explore_common::genome::{Activation, Block, Genome, PoolKind, Shape};
use tch::nn::{self, Init};
use tch::{Kind, TchError, Tensor};

use crate::error::WorkerError;

/// Momentum of the batch-norm running statistics (PyTorch's default).
const BN_MOMENTUM: f64 = 0.1;
/// Batch-norm epsilon (PyTorch's default).
const BN_EPS: f64 = 1e-5;

/// One built layer.
#[derive(Debug)]
enum Layer {
    Conv {
        weight: Tensor,
        bias: Tensor,
        stride: i64,
        padding: i64,
    },
    BatchNorm {
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
    },
    Activation(Activation),
    Pool {
        kind: PoolKind,
        size: i64,
    },
    GlobalAvgPool,
    Residual(Vec<Layer>),
    Dropout(f64),
    Dense {
        weight: Tensor,
        bias: Tensor,
    },
    /// `scale · normalize(x) · normalize(W)ᵀ`, rows normalised to unit length.
    Cosine {
        weight: Tensor,
        scale: f64,
    },
}

/// The classifier head of a built network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Head {
    /// A dense layer with bias (`head.weight`, `head.bias`).
    Linear,
    /// ELR mode's scale-invariant head: `logits = scale · normalize(x) · normalize(W)ᵀ`
    /// (`head.weight`; `head.scale` holds the scale, untrained).
    Cosine { scale: f64 },
    /// The disentangle objective's split head: the trunk's features are projected into an
    /// invariant part (`split.inv`) and a specific part (`split.spec`) of `dim` values each; the
    /// class head (`head`) sees only the invariant part, a domain head (`split.domain`, `domains`
    /// outputs) only the specific part. Inference uses the invariant path alone.
    Split { dim: u32, domains: u32 },
}

/// What [`build_with`] varies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildOptions {
    pub head: Head,
    /// The optimizer group of the scale-invariant weights (the weights of
    /// [`Genome::scale_invariant_weights`], and the head's with a cosine head); `None` keeps
    /// every variable in group 0.
    pub invariant_group: Option<usize>,
}

impl BuildOptions {
    /// A linear head, one optimizer group: the plain objective's network.
    pub const PLAIN: BuildOptions = BuildOptions {
        head: Head::Linear,
        invariant_group: None,
    };
}

/// Smallest norm a row is divided by in the cosine head (as `torch.nn.functional.normalize`).
const NORMALIZE_EPS: f64 = 1e-12;

/// A network built from a genome; use it through [`nn::ModuleT`] or the fallible
/// [`GenomeNet::f_forward_t`].
#[derive(Debug)]
pub struct GenomeNet {
    layers: Vec<Layer>,
    head: Layer,
    split: Option<SplitLayers>,
}

/// The projections of a [`Head::Split`] network.
#[derive(Debug)]
struct SplitLayers {
    invariant: Layer,
    specific: Layer,
    domain: Layer,
}

/// What a [`Head::Split`] network computes for a batch.
#[derive(Debug)]
pub struct SplitOutput {
    /// The domain-invariant features `[N, dim]`.
    pub invariant: Tensor,
    /// The domain-specific features `[N, dim]`.
    pub specific: Tensor,
    /// Class logits from the invariant features `[N, num_classes]`.
    pub logits: Tensor,
    /// Domain logits from the specific features `[N, domains]`.
    pub domain_logits: Tensor,
}

/// Creates the variables of `genome` under `vs_root` with a linear head and returns the network.
/// The genome is validated first; its shapes come from [`Genome::analyze`].
pub fn build(vs_root: &nn::Path, genome: &Genome) -> Result<GenomeNet, WorkerError> {
    build_with(vs_root, genome, BuildOptions::PLAIN)
}

/// [`build`] with a choice of head and an optimizer group for the scale-invariant weights.
/// Variables are created in the same order with the same initialisation whatever the options,
/// so the plain network is [`build`]'s exactly.
pub fn build_with(
    vs_root: &nn::Path,
    genome: &Genome,
    options: BuildOptions,
) -> Result<GenomeNet, WorkerError> {
    let analysis = genome.analyze()?;
    let invariant: HashSet<String> = match options.invariant_group {
        Some(_) => genome.scale_invariant_weights().into_iter().collect(),
        None => HashSet::new(),
    };
    let builder = Builder {
        invariant: &invariant,
        group: options.invariant_group.unwrap_or(0),
    };
    let input = genome.input;
    let mut shape = Shape::Map {
        c: input.channels,
        h: input.height,
        w: input.width,
    };
    let mut layers = Vec::with_capacity(genome.blocks.len());
    for (i, block) in genome.blocks.iter().enumerate() {
        let name = format!("b{i}");
        let (layer, out) = builder.block(&(vs_root / &name), &name, block, shape)?;
        if out != analysis.block_outputs[i] {
            return Err(WorkerError::Genome(format!(
                "internal error: blocks[{i}] builds output {out}, genome analysis says {}",
                analysis.block_outputs[i]
            )));
        }
        layers.push(layer);
        shape = out;
    }
    let head_path = vs_root / "head";
    let head = match options.head {
        Head::Linear => dense(&head_path, shape.numel(), genome.num_classes)?,
        Head::Cosine { scale } => {
            let bound = 1.0 / (shape.numel() as f64).sqrt();
            let weight = head_path.set_group(builder.group).f_var(
                "weight",
                &[genome.num_classes as i64, shape.numel() as i64],
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?;
            let mut stored = head_path.f_zeros_no_train("scale", &[1])?;
            let _ = tch::no_grad(|| stored.f_fill_(scale))?;
            Layer::Cosine { weight, scale }
        }
        Head::Split { dim, domains } => {
            if dim == 0 || domains == 0 {
                return Err(WorkerError::Genome(format!(
                    "a split head needs at least one feature and one domain, got dim {dim} and {domains} domains"
                )));
            }
            let split_path = vs_root / "split";
            let split = SplitLayers {
                invariant: dense(&(&split_path / "inv"), shape.numel(), dim)?,
                specific: dense(&(&split_path / "spec"), shape.numel(), dim)?,
                domain: dense(&(&split_path / "domain"), dim as u64, domains)?,
            };
            let head = dense(&head_path, dim as u64, genome.num_classes)?;
            return Ok(GenomeNet {
                layers,
                head,
                split: Some(split),
            });
        }
    };
    Ok(GenomeNet {
        layers,
        head,
        split: None,
    })
}

/// Creates layers, putting the scale-invariant weights into their optimizer group.
struct Builder<'a> {
    /// Variable prefixes (`b3`, `b5.r0`) of the scale-invariant conv and dense layers.
    invariant: &'a HashSet<String>,
    /// Their optimizer group.
    group: usize,
}

impl Builder<'_> {
    /// Builds one block whose input has `shape`, its variables under `p` (named `name`);
    /// returns the layer and its output shape.
    fn block(
        &self,
        p: &nn::Path,
        name: &str,
        block: &Block,
        shape: Shape,
    ) -> Result<(Layer, Shape), WorkerError> {
        let weights = if self.invariant.contains(name) {
            p.set_group(self.group)
        } else {
            p.set_group(0)
        };
        build_block(p, &weights, name, block, shape, self)
    }
}

/// Builds one block whose input has `shape`; returns the layer and its output shape. Weights of
/// convs and dense layers are created under `weights` (the same path as `p`, maybe in another
/// optimizer group).
fn build_block(
    p: &nn::Path,
    weights: &nn::Path,
    name: &str,
    block: &Block,
    shape: Shape,
    builder: &Builder<'_>,
) -> Result<(Layer, Shape), WorkerError> {
    let not_a_map =
        |what: &str| WorkerError::Genome(format!("{what} needs a feature map, got {shape}"));
    match block {
        Block::Conv {
            out_channels,
            kernel,
            stride,
        } => {
            let Shape::Map { c, h, w } = shape else {
                return Err(not_a_map("conv"));
            };
            let (k, s, pad) = (*kernel as i64, *stride as i64, (*kernel / 2) as i64);
            let fan_in = c as i64 * k * k;
            let bound = 1.0 / (fan_in as f64).sqrt();
            let init = Init::Uniform {
                lo: -bound,
                up: bound,
            };
            let weight = weights.f_var("weight", &[*out_channels as i64, c as i64, k, k], init)?;
            let bias = p.f_var("bias", &[*out_channels as i64], init)?;
            let out = |n: u32| ((n as i64 + 2 * pad - k) / s + 1) as u32;
            let layer = Layer::Conv {
                weight,
                bias,
                stride: s,
                padding: pad,
            };
            Ok((
                layer,
                Shape::Map {
                    c: *out_channels,
                    h: out(h),
                    w: out(w),
                },
            ))
        }
        Block::BatchNorm => {
            let n = match shape {
                Shape::Map { c, .. } => c,
                Shape::Flat { n } => n,
            } as i64;
            let layer = Layer::BatchNorm {
                weight: p.f_var("weight", &[n], Init::Const(1.0))?,
                bias: p.f_var("bias", &[n], Init::Const(0.0))?,
                running_mean: p.f_zeros_no_train("running_mean", &[n])?,
                running_var: p.f_ones_no_train("running_var", &[n])?,
            };
            Ok((layer, shape))
        }
        Block::Activation { kind } => Ok((Layer::Activation(*kind), shape)),
        Block::Pool { kind, size } => {
            let Shape::Map { c, h, w } = shape else {
                return Err(not_a_map("pool"));
            };
            let layer = Layer::Pool {
                kind: *kind,
                size: *size as i64,
            };
            Ok((
                layer,
                Shape::Map {
                    c,
                    h: h / size,
                    w: w / size,
                },
            ))
        }
        Block::GlobalAvgPool => {
            let Shape::Map { c, .. } = shape else {
                return Err(not_a_map("global_avg_pool"));
            };
            Ok((Layer::GlobalAvgPool, Shape::Flat { n: c }))
        }
        Block::Residual { body } => {
            let mut inner = Vec::with_capacity(body.len());
            let mut s = shape;
            for (j, b) in body.iter().enumerate() {
                let inner_name = format!("{name}.r{j}");
                let (layer, out) = builder.block(&(p / format!("r{j}")), &inner_name, b, s)?;
                inner.push(layer);
                s = out;
            }
            Ok((Layer::Residual(inner), shape))
        }
        Block::Dropout { rate } => Ok((Layer::Dropout(*rate as f64), shape)),
        Block::Dense { units } => Ok((
            dense_in(p, weights, shape.numel(), *units)?,
            Shape::Flat { n: *units },
        )),
    }
}

/// A fully connected layer with PyTorch's default initialisation.
fn dense(p: &nn::Path, in_features: u64, out_features: u32) -> Result<Layer, WorkerError> {
    dense_in(p, p, in_features, out_features)
}

/// [`dense`] with its weight created under `weights` (the same path, maybe another group).
fn dense_in(
    p: &nn::Path,
    weights: &nn::Path,
    in_features: u64,
    out_features: u32,
) -> Result<Layer, WorkerError> {
    let bound = 1.0 / (in_features as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    Ok(Layer::Dense {
        weight: weights.f_var("weight", &[out_features as i64, in_features as i64], init)?,
        bias: p.f_var("bias", &[out_features as i64], init)?,
    })
}

impl Layer {
    fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor, TchError> {
        match self {
            Layer::Conv {
                weight,
                bias,
                stride,
                padding,
            } => xs.f_conv2d(
                weight,
                Some(bias),
                [*stride, *stride],
                [*padding, *padding],
                [1, 1],
                1,
            ),
            Layer::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
            } => xs.f_batch_norm(
                Some(weight),
                Some(bias),
                Some(running_mean),
                Some(running_var),
                train,
                BN_MOMENTUM,
                BN_EPS,
                true,
            ),
            Layer::Activation(kind) => match kind {
                Activation::Relu => xs.f_relu(),
                Activation::Gelu => xs.f_gelu("none"),
                Activation::Silu => xs.f_silu(),
                Activation::Tanh => xs.f_tanh(),
            },
            Layer::Pool { kind, size } => match kind {
                PoolKind::Max => {
                    xs.f_max_pool2d([*size, *size], [*size, *size], [0, 0], [1, 1], false)
                }
                PoolKind::Avg => xs.f_avg_pool2d(
                    [*size, *size],
                    [*size, *size],
                    [0, 0],
                    false,
                    true,
                    None::<i64>,
                ),
            },
            Layer::GlobalAvgPool => xs.f_mean_dim(Some([2i64, 3].as_slice()), false, Kind::Float),
            Layer::Residual(body) => {
                let mut ys = xs.shallow_clone();
                for layer in body {
                    ys = layer.forward(&ys, train)?;
                }
                xs.f_add(&ys)
            }
            Layer::Dropout(rate) => {
                if train && *rate > 0.0 {
                    xs.f_dropout(*rate, true)
                } else {
                    Ok(xs.shallow_clone())
                }
            }
            Layer::Dense { weight, bias } => {
                let flat = if xs.dim() > 2 {
                    xs.f_flatten(1, -1)?
                } else {
                    xs.shallow_clone()
                };
                flat.f_linear(weight, Some(bias))
            }
            Layer::Cosine { weight, scale } => {
                let flat = if xs.dim() > 2 {
                    xs.f_flatten(1, -1)?
                } else {
                    xs.shallow_clone()
                };
                let x = unit_rows(&flat)?;
                let w = unit_rows(weight)?;
                x.f_matmul(&w.f_tr()?)?.f_mul_scalar(*scale)
            }
        }
    }
}

/// Each row of a matrix divided by its Euclidean norm (at least [`NORMALIZE_EPS`]).
fn unit_rows(m: &Tensor) -> Result<Tensor, TchError> {
    let norms = m
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?
        .f_clamp_min(NORMALIZE_EPS)?;
    m.f_div(&norms)
}

impl GenomeNet {
    /// Computes the logits `[N, num_classes]` of a batch `[N, C, H, W]`; `train` enables
    /// dropout and batch statistics (and updates the running statistics). A split network
    /// classifies from its invariant features.
    pub fn f_forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let features = self.f_features_t(xs, train)?;
        self.f_head(&features, train)
    }

    /// The trunk's output for a batch, flattened to `[N, features]`: what the head sees.
    pub fn f_features_t(&self, xs: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let mut ys = xs.shallow_clone();
        for layer in &self.layers {
            ys = layer.forward(&ys, train)?;
        }
        if ys.dim() > 2 {
            ys.f_flatten(1, -1)
        } else {
            Ok(ys)
        }
    }

    /// The logits of trunk features from [`GenomeNet::f_features_t`] (through the invariant
    /// projection first in a split network).
    pub fn f_head(&self, features: &Tensor, train: bool) -> Result<Tensor, TchError> {
        match &self.split {
            None => self.head.forward(features, train),
            Some(split) => {
                let invariant = split.invariant.forward(features, train)?;
                self.head.forward(&invariant, train)
            }
        }
    }

    /// Both feature parts and both heads of a [`Head::Split`] network; `None` for other heads.
    pub fn f_split_t(&self, xs: &Tensor, train: bool) -> Result<Option<SplitOutput>, TchError> {
        let Some(split) = &self.split else {
            return Ok(None);
        };
        let features = self.f_features_t(xs, train)?;
        let invariant = split.invariant.forward(&features, train)?;
        let specific = split.specific.forward(&features, train)?;
        let logits = self.head.forward(&invariant, train)?;
        let domain_logits = split.domain.forward(&specific, train)?;
        Ok(Some(SplitOutput {
            invariant,
            specific,
            logits,
            domain_logits,
        }))
    }
}

impl nn::ModuleT for GenomeNet {
    /// Panics on a libtorch error (e.g. an input of the wrong shape); prefer
    /// [`GenomeNet::f_forward_t`] where failure must be handled.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.f_forward_t(xs, train)
            .unwrap_or_else(|e| panic!("genome network forward failed: {e}"))
    }
}

/// Number of trainable scalars in a var store.
pub fn trainable_params(vs: &nn::VarStore) -> u64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use explore_common::genome::InputShape;
    use explore_common::presets;
    use tch::nn::ModuleT;
    use tch::Device;

    use super::*;
    use crate::testing::torch_lock;

    #[test]
    fn every_preset_builds_with_the_analysed_parameter_count() {
        let _guard = torch_lock();
        for (name, genome) in presets::presets() {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = build(&vs.root(), &genome).unwrap();
            let analysis = genome.analyze().unwrap();
            assert_eq!(trainable_params(&vs), analysis.params, "{name}");
            let xs = Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu));
            assert_eq!(net.forward_t(&xs, true).size(), vec![3, 10], "{name}");
            assert_eq!(net.forward_t(&xs, false).size(), vec![3, 10], "{name}");
        }
    }

    #[test]
    fn variable_names_follow_block_positions() {
        let _guard = torch_lock();
        let genome = presets::preset("resnet_small").unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        build(&vs.root(), &genome).unwrap();
        let vars = vs.variables();
        assert_eq!(vars["b0.weight"].size(), vec![32, 1, 3, 3]);
        assert_eq!(vars["b1.running_var"].size(), vec![32]);
        assert_eq!(vars["b3.r0.weight"].size(), vec![32, 32, 3, 3]);
        assert_eq!(vars["b3.r4.running_mean"].size(), vec![32]);
        assert_eq!(vars["head.weight"].size(), vec![10, 64]);
        assert_eq!(vars["head.bias"].size(), vec![10]);
    }

    #[test]
    fn every_block_kind_runs_on_maps_and_vectors() {
        let _guard = torch_lock();
        let genome = Genome {
            input: InputShape {
                channels: 3,
                height: 9,
                width: 9,
            },
            num_classes: 4,
            blocks: vec![
                Block::Conv {
                    out_channels: 5,
                    kernel: 5,
                    stride: 2,
                },
                Block::Activation {
                    kind: Activation::Gelu,
                },
                Block::Pool {
                    kind: PoolKind::Avg,
                    size: 2,
                },
                Block::Residual {
                    body: vec![
                        Block::BatchNorm,
                        Block::Activation {
                            kind: Activation::Silu,
                        },
                    ],
                },
                Block::Dense { units: 6 },
                Block::BatchNorm,
                Block::Activation {
                    kind: Activation::Tanh,
                },
                Block::Residual {
                    body: vec![Block::Dense { units: 6 }, Block::Dropout { rate: 0.5 }],
                },
            ],
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build(&vs.root(), &genome).unwrap();
        assert_eq!(trainable_params(&vs), genome.analyze().unwrap().params);
        let xs = Tensor::randn([2, 3, 9, 9], (Kind::Float, Device::Cpu));
        assert_eq!(net.f_forward_t(&xs, true).unwrap().size(), vec![2, 4]);
        // dropout is off in eval mode: two evaluations agree
        let a = net.f_forward_t(&xs, false).unwrap();
        let b = net.f_forward_t(&xs, false).unwrap();
        assert!(a.equal(&b));
    }

    #[test]
    fn global_avg_pool_averages_each_channel() {
        let _guard = torch_lock();
        let genome = Genome {
            input: InputShape {
                channels: 2,
                height: 2,
                width: 2,
            },
            num_classes: 2,
            blocks: vec![Block::GlobalAvgPool],
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build(&vs.root(), &genome).unwrap();
        let mut vars = vs.variables();
        tch::no_grad(|| {
            let eye = Tensor::from_slice(&[1f32, 0., 0., 1.]).view([2, 2]);
            vars.get_mut("head.weight").unwrap().copy_(&eye);
            let _ = vars.get_mut("head.bias").unwrap().zero_();
        });
        let xs = Tensor::from_slice(&[1f32, 2., 3., 4., 10., 10., 10., 30.]).view([1, 2, 2, 2]);
        let out = Vec::<f32>::try_from(net.forward_t(&xs, false).view([-1])).unwrap();
        assert_eq!(out, vec![2.5, 15.0]);
    }

    #[test]
    fn invalid_genomes_are_refused_with_their_path() {
        let _guard = torch_lock();
        let mut genome = presets::preset("mlp").unwrap();
        genome.blocks.push(Block::Conv {
            out_channels: 4,
            kernel: 3,
            stride: 1,
        });
        let vs = nn::VarStore::new(Device::Cpu);
        let err = build(&vs.root(), &genome).unwrap_err().to_string();
        assert!(err.contains("blocks[5]"), "{err}");
    }
}
