//! `worker`: trains explore trials with libtorch. `worker train` runs one configuration exactly
//! like a cluster trial; `worker evaluate` scores a saved checkpoint; `worker export` writes one
//! as TorchScript.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use explore_common::genome::Genome;
use explore_common::hparams::HyperParams;
use explore_common::presets;
use std::time::Duration;

use explore_common::client::{read_token, TlsOptions};
use explore_common::logging::{self, LogFormat};
use explore_worker::cli::{DataArgs, RuntimeArgs};
use explore_worker::device::describe;
use explore_worker::export;
use explore_worker::join::{self, JoinConfig};
use explore_worker::model::Head;
use explore_worker::probing;
use explore_worker::progress;
use explore_worker::train::{self, Control, TrialPlan};
use serde_json::json;
use std::io::IsTerminal;
use tokio::sync::watch;
use tracing::info;

#[derive(Debug, Parser)]
#[command(name = "worker", version, about = "explore training worker")]
struct Cli {
    /// Log lines on stderr: text (coloured only on a terminal, never with NO_COLOR; progress
    /// bars on a terminal) or json (one object per line, fields at the top level)
    #[arg(
        long,
        global = true,
        env = explore_common::logging::LOG_FORMAT_ENV,
        value_name = "FORMAT",
        default_value = "text",
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(explore_common::logging::LOG_FORMAT_NAMES),
            |s| s.parse::<LogFormat>().unwrap_or_default()
        )
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train one genome with one set of hyperparameters like a cluster trial; prints the
    /// result as JSON
    Train(TrainArgs),
    /// Score a saved checkpoint on the validation and test splits; prints them as JSON
    Evaluate(EvalArgs),
    /// Probe a saved checkpoint on a (new) task's training split without training it (S2):
    /// prints LogME, LEEP, NCE and the latency per image as JSON
    Probe(EvalArgs),
    /// Check a genome and print its parameter count, FLOPs per example and block count as JSON
    Analyze(AnalyzeArgs),
    /// Join a master and train the trials it hands out until stopped (SIGTERM drains)
    Join(JoinArgs),
    /// Write a checkpoint as a TorchScript module for PyTorch (`torch.jit.load`): it takes
    /// float images [N, C, H, W] in [0, 1], applies the training split's normalisation itself
    /// and returns logits; prints the normalisation and the module's accuracies as JSON
    Export(ExportArgs),
    /// Run N simulated workers against a master: real registration, leases, heartbeats and
    /// completions with instant synthetic scores (no training); reports throughput and latency
    Simulate(SimulateArgs),
}

/// How a worker (real or simulated) reaches the master: its address, token and TLS files.
#[derive(Debug, Args)]
struct MasterArgs {
    /// URL of the master. `worker join` also takes several, comma-separated or as repeated
    /// flags (every master of a cluster, active and standbys): it follows whichever is active,
    /// moving to the next when one is unreachable or answers UNAVAILABLE. One Service address
    /// in front of the masters works too
    #[arg(
        long,
        env = "EXPLORE_MASTER",
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        required = true
    )]
    master: Vec<String>,
    /// File holding the cluster token (default: $EXPLORE_TOKEN)
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// CA (PEM) that signed the master's certificate, for an https:// master [default: the
    /// system's roots]
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a master that requires one; needs --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl MasterArgs {
    /// The TLS options these flags name.
    fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca: self.tls_ca.clone(),
            identity: self.tls_cert.clone().zip(self.tls_key.clone()),
        }
    }

    /// The one master URL, for the commands that take one.
    fn single_master(&self) -> Result<&str> {
        match self.master.as_slice() {
            [url] => Ok(url),
            urls => bail!("this command takes one master url, got {}", urls.len()),
        }
    }

    /// The cluster token, from `--token-file` or `$EXPLORE_TOKEN`.
    fn token(&self) -> Result<String> {
        Ok(read_token(self.token_file.as_deref(), None)?)
    }
}

#[derive(Debug, Args)]
struct SimulateArgs {
    #[command(flatten)]
    connection: MasterArgs,
    /// Simulated workers (one slot each)
    #[arg(long, value_name = "N", default_value_t = 8)]
    count: usize,
    /// gRPC connections the workers share (0 = one each)
    #[arg(long, value_name = "N", default_value_t = 0)]
    connections: usize,
    /// Stop after this many seconds (0 = when the work runs out)
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    duration_secs: f64,
    /// A worker leaves after this many seconds without a trial
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    idle_exit_secs: f64,
    /// Also call ListExperiments (the status view) every N milliseconds and report its latency
    #[arg(long, value_name = "MS", default_value_t = 0)]
    status_every_ms: u64,
    /// Pretend each trial trains this many seconds before reporting (0 = at once)
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    trial_secs: f64,
    /// Spread of --trial-secs: each trial takes it times a factor drawn uniformly from
    /// [1 - F, 1 + F] (0 = all alike, which keeps the workers in lock-step)
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = fraction)]
    trial_jitter: f64,
    /// Start the workers one after another over this many seconds (0 = all at once)
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    ramp_secs: f64,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct JoinArgs {
    #[command(flatten)]
    connection: MasterArgs,
    /// Name shown in the master's logs [default: the host name and process id]
    #[arg(long)]
    name: Option<String>,
    /// Directory holding the Fashion-MNIST IDX files
    #[arg(long, value_name = "DIR", default_value = explore_worker::data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Give up when the master stays unreachable this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    give_up_after_secs: u64,
    /// Exit after this many trials (0 = no limit)
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_trials: u32,
    /// Exit after this many seconds without work (0 = never); lets a Kubernetes Job finish
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    idle_exit_secs: u64,
    /// Train N trials at once on the device, sharing one copy of the data; each trial keeps
    /// its own lease
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    slots: u32,
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// Genome JSON file, or `preset:NAME` (cnn2, cnn3, mlp, resnet_small)
    #[arg(long, value_name = "FILE")]
    genome: String,
    /// Hyperparameters JSON file, or `default`
    #[arg(long, value_name = "FILE")]
    hparams: String,
    #[command(flatten)]
    data: DataArgs,
    /// Seed of the weight initialisation, dropout and batch order
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Write the trained weights to this .safetensors file
    #[arg(long, value_name = "FILE")]
    save_checkpoint: Option<PathBuf>,
    /// Start from a parent's weights (a .safetensors checkpoint): tensors whose name and shape
    /// match are copied, the rest freshly initialised, as for a cluster trial that inherits
    #[arg(long, value_name = "FILE")]
    parent_checkpoint: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Genome JSON file, or `preset:NAME`
    #[arg(long, value_name = "FILE")]
    genome: String,
    /// Weights (.safetensors) of the genome, e.g. a trial's checkpoint
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// Where to write the TorchScript module (e.g. model.pt)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The data the weights were trained on, split as for the trial (the module bakes in its
    /// training split's normalisation and is checked on its validation and test splits)
    #[command(flatten)]
    data: DataArgs,
    /// libtorch intra-op threads [default: libtorch's choice]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=1024))]
    threads: Option<i32>,
}

#[derive(Debug, Args)]
struct AnalyzeArgs {
    /// Genome JSON file, or `preset:NAME`
    #[arg(long, value_name = "FILE")]
    genome: String,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Genome JSON file, or `preset:NAME`
    #[arg(long, value_name = "FILE")]
    genome: String,
    /// Weights saved by `worker train --save-checkpoint`
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn main() {
    // Exit codes (README "Exit codes"): 0 success, 1 error, 2 usage error (clap), 130 a second
    // Ctrl-C or SIGTERM while `worker join` drains.
    let cli = Cli::parse();
    // Progress bars only on a terminal and with text logs; elsewhere progress is log lines.
    if cli.log_format == LogFormat::Text && std::io::stderr().is_terminal() {
        progress::enable_bars();
    }
    let log_format = cli.log_format;
    logging::init_with_writer(log_format, progress::LogWriter);
    let result = match cli.command {
        Command::Train(args) => run_train(args),
        Command::Evaluate(args) => run_evaluate(args),
        Command::Probe(args) => run_probe(args),
        Command::Analyze(args) => run_analyze(args),
        Command::Export(args) => run_export(args),
        Command::Join(args) => run_join(args),
        Command::Simulate(args) => run_simulate(args),
    };
    if let Err(e) = result {
        logging::report_error(log_format, &format!("{e:#}"));
        std::process::exit(1);
    }
}

fn run_join(args: JoinArgs) -> Result<()> {
    let device = args.runtime.apply()?;
    let token = args.connection.token()?;
    let name = args.name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let config = JoinConfig {
        tls: args.connection.tls(),
        masters: args.connection.master,
        token,
        name,
        device,
        fashion_mnist_dir: args.data_dir,
        give_up_after: Duration::from_secs(args.give_up_after_secs),
        max_trials: args.max_trials,
        idle_exit: Duration::from_secs(args.idle_exit_secs),
        slots: args.slots,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            info!("draining: finishing the current trial, then leaving (signal again to quit now)");
            let _ = shutdown_tx.send(true);
            shutdown_signal().await;
            eprintln!("quitting now; the master re-leases unfinished trials");
            std::process::exit(130);
        });
        join::run(config, shutdown_rx).await
    })?;
    Ok(())
}

/// A number in [0, 1] (`--trial-jitter`).
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        Ok(_) => Err("must be between 0 and 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn run_simulate(args: SimulateArgs) -> Result<()> {
    use explore_worker::simulate::{self, SimConfig};
    let token = args.connection.token()?;
    let mut config = SimConfig::new(args.connection.single_master()?, &token, args.count);
    config.tls = args.connection.tls();
    config.connections = args.connections;
    config.duration =
        (args.duration_secs > 0.0).then(|| Duration::from_secs_f64(args.duration_secs));
    config.idle_exit = Duration::from_secs_f64(args.idle_exit_secs.max(0.0));
    config.trial_time = Duration::from_secs_f64(args.trial_secs.max(0.0));
    config.trial_jitter = args.trial_jitter;
    config.ramp = Duration::from_secs_f64(args.ramp_secs.max(0.0));
    config.status_every =
        (args.status_every_ms > 0).then(|| Duration::from_millis(args.status_every_ms));
    info!(
        workers = args.count,
        "simulated workers with synthetic scores (no training)"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        simulate::run(config, stop_rx).await
    });
    let report = report.map_err(|e| anyhow!(e))?;
    if args.json {
        println!("{}", simulate::report_json(&report));
    } else {
        println!(
            "synthetic: {} workers, {} trials in {:.1} s ({:.1} trials/s), acquire p50 {:.2} ms p99 {:.2} ms, complete p50 {:.2} ms p99 {:.2} ms, {} errors",
            report.workers, report.trials, report.seconds, report.trials_per_second,
            report.acquire.p50_ms, report.acquire.p99_ms, report.complete.p50_ms,
            report.complete.p99_ms, report.errors
        );
        for e in &report.error_samples {
            println!("  error: {e}");
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

fn run_train(args: TrainArgs) -> Result<()> {
    let genome = load_genome(&args.genome)?;
    let hparams = load_hparams(&args.hparams)?;
    if let Some(path) = &args.save_checkpoint {
        check_safetensors_name(path)?;
    }
    if let Some(path) = &args.parent_checkpoint {
        check_safetensors_name(path)?;
        if !path.is_file() {
            bail!("parent checkpoint {} does not exist", path.display());
        }
    }
    let analysis = genome.analyze()?;
    let device = args.runtime.apply()?;
    let split = args.data.load_split(device)?;
    info!(
        device = %describe(device),
        threads = tch::get_num_threads(),
        train = split.train_len(),
        validation = split.val_len(),
        test = split.test_len(),
        params = analysis.params,
        epochs = hparams.epochs,
        "training"
    );
    let plan = TrialPlan {
        genome,
        hparams,
        seed: args.seed,
        parent_checkpoint: args.parent_checkpoint.clone(),
    };
    let mut metrics = std::collections::BTreeMap::new();
    // A bar on a terminal, else a line per epoch (and every 30 s within long epochs).
    let ids = progress::TrialIds {
        trial_id: "train".into(),
        attempt: 1,
        worker_id: None,
    };
    let bar = std::cell::RefCell::new(progress::TrialProgress::start(ids, plan.hparams.epochs));
    let outcome = train::train_trial_observed(
        &plan,
        &split,
        device,
        &mut |r| {
            metrics = r.metrics.clone();
            bar.borrow_mut().epoch(r);
            Control::Continue
        },
        &mut |b| bar.borrow_mut().batch(b),
    )?;
    drop(bar);
    if let Some(path) = &args.save_checkpoint {
        std::fs::write(path, &outcome.checkpoint)
            .with_context(|| format!("cannot write checkpoint {}", path.display()))?;
        info!(path = %path.display(), bytes = outcome.checkpoint.len(), "checkpoint saved");
    }
    let result = json!({
        "val_accuracy": outcome.val_accuracy,
        "test_accuracy": outcome.test_accuracy,
        "train_loss": outcome.train_loss,
        "epochs_run": outcome.epochs_run,
        "train_seconds": outcome.train_seconds,
        "params": outcome.params,
        "flops": analysis.flops,
        "inherited_tensors": outcome.inherited.copied.len(),
        "metrics": metrics,
    });
    println!("{result}");
    Ok(())
}

fn run_evaluate(args: EvalArgs) -> Result<()> {
    let genome = load_genome(&args.genome)?;
    check_safetensors_name(&args.checkpoint)?;
    let device = args.runtime.apply()?;
    let split = args.data.load_split(device)?;
    let (val_accuracy, test_accuracy) =
        train::evaluate_checkpoint(&genome, &args.checkpoint, &split, device)?;
    println!(
        "{}",
        json!({ "val_accuracy": val_accuracy, "test_accuracy": test_accuracy })
    );
    Ok(())
}

fn run_export(args: ExportArgs) -> Result<()> {
    let genome = load_genome(&args.genome)?;
    check_safetensors_name(&args.weights)?;
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let (plan, split_config) = args.data.plan()?;
    if plan.input_shape() != genome.input {
        bail!(
            "the genome takes {:?} images but the data has {:?}",
            genome.input,
            plan.input_shape()
        );
    }
    let normalisation = plan.normalisation(&split_config)?;
    let split = plan.split(&split_config, tch::Device::Cpu)?;
    let report =
        export::export_torchscript(&genome, &args.weights, &normalisation, &split, &args.out)?;
    info!(path = %args.out.display(), "TorchScript module written");
    let input = genome.input;
    let head = match report.head {
        Head::Linear => "linear",
        Head::Cosine { .. } => "cosine",
        Head::Split { .. } => "split",
    };
    println!(
        "{}",
        json!({
            "out": args.out,
            "input": {
                "layout": "NCHW",
                "dtype": "float32",
                "range": [0.0, 1.0],
                "channels": input.channels,
                "height": input.height,
                "width": input.width,
            },
            "normalisation": {
                "mean": report.normalisation.iter().map(|s| s.mean).collect::<Vec<_>>(),
                "std": report.normalisation.iter().map(|s| s.std).collect::<Vec<_>>(),
            },
            "output": { "logits": report.num_classes },
            "head": head,
            "split": {
                "train": split.train_len(),
                "validation": split.val_len(),
                "test": split.test_len(),
            },
            "val_accuracy": report.traced_val_accuracy,
            "test_accuracy": report.traced_test_accuracy,
            "network_val_accuracy": report.network_val_accuracy,
            "network_test_accuracy": report.network_test_accuracy,
            "max_logit_difference": report.max_logit_difference,
        })
    );
    Ok(())
}

fn run_probe(args: EvalArgs) -> Result<()> {
    let genome = load_genome(&args.genome)?;
    check_safetensors_name(&args.checkpoint)?;
    let device = args.runtime.apply()?;
    let split = args.data.load_split(device)?;
    let outcome = probing::probe_trial(&genome, &args.checkpoint, &split, device)?;
    println!(
        "{}",
        json!({
            "logme": outcome.scores.logme,
            "leep": outcome.scores.leep,
            "nce": outcome.scores.nce,
            "latency_ms": outcome.latency_ms,
            "examples": outcome.examples,
            "classes": outcome.classes,
            "seconds": outcome.seconds,
        })
    );
    Ok(())
}

fn run_analyze(args: AnalyzeArgs) -> Result<()> {
    let genome = load_genome(&args.genome)?;
    let analysis = genome.analyze()?;
    println!(
        "{}",
        json!({
            "params": analysis.params,
            "flops": analysis.flops,
            "blocks": genome.depth(),
        })
    );
    Ok(())
}

/// Reads a genome file, or a preset given as `preset:NAME`.
fn load_genome(arg: &str) -> Result<Genome> {
    if let Some(name) = arg.strip_prefix("preset:") {
        return presets::preset(name).ok_or_else(|| {
            anyhow!(
                "unknown preset {name:?}, expected one of {}",
                presets::NAMES.join(", ")
            )
        });
    }
    let text =
        std::fs::read_to_string(arg).with_context(|| format!("cannot read genome file {arg}"))?;
    Genome::from_json(&text).with_context(|| format!("genome file {arg}"))
}

/// Reads a hyperparameter file, or takes the defaults for `default`.
fn load_hparams(arg: &str) -> Result<HyperParams> {
    if arg == "default" {
        return Ok(HyperParams::default());
    }
    let text = std::fs::read_to_string(arg)
        .with_context(|| format!("cannot read hyperparameter file {arg}"))?;
    HyperParams::from_json(&text).with_context(|| format!("hyperparameter file {arg}"))
}

fn check_safetensors_name(path: &Path) -> Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!(
            "checkpoint {} must have the .safetensors extension",
            path.display()
        );
    }
    Ok(())
}

/// The command lines in deploy/ parsed by this CLI.
#[cfg(test)]
mod deploy_manifest_tests;

#[cfg(test)]
mod master_list_tests {
    use super::*;

    fn parse(argv: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(argv)
    }

    fn join_masters(argv: &[&str]) -> Vec<String> {
        match parse(argv).unwrap().command {
            Command::Join(args) => args.connection.master,
            other => panic!("not join: {other:?}"),
        }
    }

    #[test]
    fn join_takes_one_master_or_a_list_comma_separated_or_repeated() {
        assert_eq!(
            join_masters(&["worker", "join", "--master", "http://a:1"]),
            ["http://a:1"]
        );
        assert_eq!(
            join_masters(&[
                "worker",
                "join",
                "--master",
                "http://a:1,http://b:2",
                "--master",
                "http://c:3"
            ]),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
    }

    #[test]
    fn simulate_refuses_a_list_of_masters() {
        let cli = parse(&["worker", "simulate", "--master", "http://a:1,http://b:2"]).unwrap();
        let Command::Simulate(args) = cli.command else {
            panic!("not simulate");
        };
        let e = args.connection.single_master().unwrap_err().to_string();
        assert!(e.contains("one master url, got 2"), "{e}");
    }

    #[test]
    fn simulate_takes_a_trial_jitter_between_zero_and_one() {
        let ok = parse(&[
            "worker",
            "simulate",
            "--master",
            "http://a:1",
            "--trial-jitter",
            "0.5",
        ]);
        let Command::Simulate(args) = ok.unwrap().command else {
            panic!("not simulate");
        };
        assert_eq!(args.trial_jitter, 0.5);
        for bad in ["1.5", "-0.1", "lots"] {
            let arg = format!("--trial-jitter={bad}");
            let e = parse(&["worker", "simulate", "--master", "http://a:1", &arg])
                .unwrap_err()
                .to_string();
            assert!(e.contains("--trial-jitter"), "{bad}: {e}");
        }
    }
}
