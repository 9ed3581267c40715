//! Exporting a trial's model: `master export EXP [--trial ID] DIR` and `master best --export DIR`.
//!
//! Both write the files that need nothing but the master ([`write_model`]): `genome.json`,
//! `hparams.json`, `weights.safetensors` (the trial's checkpoint), `data.toml` (the `[data]`
//! section the trial was trained on, for `worker` commands), the machine-readable model card
//! `model.json` (data, split, scores, lineage) and its human-readable twin `MODEL_CARD.md`.
//! `master export` then asks the `worker` binary to trace the model to TorchScript
//! (`model.pt`, see `worker/src/export.rs`): the master never links libtorch. The worker is
//! `$EXPLORE_WORKER_BIN`, else `worker` next to this executable, else `worker` on `PATH`; when
//! there is none, or it fails, the other files are still written and the error gives the exact
//! `worker export` command to run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use explore_common::client::AuthChannel;
use explore_common::convert::data_spec_from_proto;
use explore_common::proto::admin_service_client::AdminServiceClient;
use explore_common::proto::{self, TrialRecord};
use serde_json::{json, Value};
use tokio_stream::StreamExt;

use crate::cli::{status_error, ConnectArgs};

/// Most ancestors the lineage follows back towards the seed.
pub const MAX_LINEAGE: usize = 200;

/// Environment variable naming the `worker` binary that writes `model.pt`.
pub const WORKER_BIN_ENV: &str = "EXPLORE_WORKER_BIN";

/// Flags of `master export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The experiment id.
    pub experiment: String,
    /// Export this trial of the experiment instead of its best.
    #[arg(long)]
    pub trial: Option<String>,
    /// Directory to write the files to (created when missing).
    pub dir: PathBuf,
    /// Directory holding Fashion-MNIST for the worker that traces the model [default: the
    /// worker's, /usr/share/datasets/fashion-mnist].
    #[arg(long, value_name = "DIR")]
    pub fashion_mnist_dir: Option<PathBuf>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `master export`: the model files, the model cards, then `model.pt` from `worker export`.
pub async fn run(args: &ExportArgs) -> Result<()> {
    let mut client = args.connect.admin().await?;
    let trial = match &args.trial {
        Some(id) => {
            let trial = get_trial(&mut client, id).await?;
            if trial.experiment_id != args.experiment {
                bail!(
                    "trial {id} belongs to experiment {}, not {}",
                    trial.experiment_id,
                    args.experiment
                );
            }
            trial
        }
        None => client
            .get_best_model(proto::GetBestModelRequest {
                experiment_id: args.experiment.clone(),
            })
            .await
            .map_err(status_error)
            .with_context(|| {
                format!(
                    "cannot get the best model of experiment {}",
                    args.experiment
                )
            })?
            .into_inner(),
    };
    let mut card = write_model(&mut client, &trial, &args.dir).await?;
    let command = worker_command(&args.dir, &trial, args.fashion_mnist_dir.as_deref());
    let outcome = find_worker()
        .and_then(|worker| trace(&worker, &command))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\nthe model was exported to {} without model.pt; write it with:\n  {}",
                args.dir.display(),
                command.shell("worker")
            )
        });
    let traced = outcome?;
    card["torchscript"] = torchscript_section(&traced);
    if let Some(split) = traced.get("split") {
        card["split"]["train"] = split["train"].clone();
        card["split"]["validation"] = split["validation"].clone();
        card["split"]["test"] = split["test"].clone();
    }
    write_cards(&args.dir, &card)?;
    println!(
        "exported trial {} (seq {}) of {} to {}: model.pt, weights.safetensors, genome.json, \
         hparams.json, data.toml, model.json, MODEL_CARD.md",
        trial.trial_id,
        trial.seq,
        trial.experiment_id,
        args.dir.display()
    );
    if let Some(test) = traced["test_accuracy"].as_f64() {
        println!("  model.pt test accuracy {test:.4} on [0, 1] images");
    }
    Ok(())
}

/// One trial by id, with an error that names it.
async fn get_trial(client: &mut AdminServiceClient<AuthChannel>, id: &str) -> Result<TrialRecord> {
    Ok(client
        .get_trial(proto::GetTrialRequest {
            trial_id: id.to_string(),
        })
        .await
        .map_err(status_error)
        .with_context(|| format!("cannot get trial {id}"))?
        .into_inner())
}

/// Writes everything but `model.pt` to `dir` (see the module documentation) and returns the
/// model card. Fails before writing anything when the trial has no checkpoint.
pub async fn write_model(
    client: &mut AdminServiceClient<AuthChannel>,
    t: &TrialRecord,
    dir: &Path,
) -> Result<Value> {
    if t.checkpoint_sha256.is_empty() {
        bail!(
            "trial {} ({}) has no checkpoint to export: only a trial that completed (or was \
             pruned after uploading its weights) has one",
            t.trial_id,
            t.status
        );
    }
    let lineage = lineage(client, t).await?;
    let weights = download(client, &t.checkpoint_sha256).await?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let genome: Value = serde_json::from_str(&t.genome_json).context("the trial's genome")?;
    let hparams: Value =
        serde_json::from_str(&t.hparams_json).context("the trial's hyperparameters")?;
    write(dir, "genome.json", &serde_json::to_string_pretty(&genome)?)?;
    write(
        dir,
        "hparams.json",
        &serde_json::to_string_pretty(&hparams)?,
    )?;
    std::fs::write(dir.join("weights.safetensors"), &weights)
        .with_context(|| format!("cannot write {}", dir.join("weights.safetensors").display()))?;
    let data = t.data.clone().unwrap_or_default();
    write(dir, "data.toml", &data_toml(&data)?)?;
    let card = model_card(t, &data, &lineage);
    write_cards(dir, &card)?;
    Ok(card)
}

/// The trial's ancestors from its parent back to the seed (at most [`MAX_LINEAGE`]).
async fn lineage(
    client: &mut AdminServiceClient<AuthChannel>,
    t: &TrialRecord,
) -> Result<Vec<TrialRecord>> {
    let mut ancestors = Vec::new();
    let mut parent = t.parent_trial_id.clone();
    while !parent.is_empty() && ancestors.len() < MAX_LINEAGE {
        let record = get_trial(client, &parent)
            .await
            .with_context(|| format!("the lineage of trial {}", t.trial_id))?;
        parent = record.parent_trial_id.clone();
        ancestors.push(record);
    }
    Ok(ancestors)
}

/// The checkpoint with this hash, from the master.
async fn download(client: &mut AdminServiceClient<AuthChannel>, sha256: &str) -> Result<Vec<u8>> {
    let mut stream = client
        .download_checkpoint(proto::DownloadCheckpointRequest {
            sha256: sha256.to_string(),
        })
        .await
        .map_err(status_error)
        .with_context(|| format!("cannot download checkpoint {sha256}"))?
        .into_inner();
    let mut weights = Vec::new();
    while let Some(chunk) = stream.next().await {
        weights.extend_from_slice(&chunk.map_err(status_error)?.data);
    }
    Ok(weights)
}

/// The trial's data as a `[data]` section (`worker --data-config` reads it).
fn data_toml(data: &proto::DataSpec) -> Result<String> {
    #[derive(serde::Serialize)]
    struct Section {
        data: explore_common::spec::DataConfig,
    }
    let (config, split_seed) =
        data_spec_from_proto(data).context("the trial's data section is not valid")?;
    let section = toml::to_string(&Section { data: config })
        .context("cannot write the data section as TOML")?;
    Ok(format!(
        "# The data the trial was trained on; split seed {split_seed} (worker: --split-seed {split_seed}).\n{section}"
    ))
}

/// The machine-readable model card (`model.json`).
pub fn model_card(t: &TrialRecord, data: &proto::DataSpec, lineage: &[TrialRecord]) -> Value {
    let finite = |v: f64| v.is_finite().then_some(v);
    let transform = data
        .transform
        .as_ref()
        .filter(|x| x.rotate != 0.0 || x.invert || x.low_contrast != 0.0 || x.noise != 0.0)
        .map(|x| {
            json!({
                "rotate": x.rotate,
                "invert": x.invert,
                "low_contrast": x.low_contrast,
                "noise": x.noise,
            })
        });
    let test_accuracy = t.metrics.get("test_accuracy").copied().and_then(finite);
    json!({
        "experiment_id": t.experiment_id,
        "trial_id": t.trial_id,
        "seq": t.seq,
        "status": t.status,
        "validation_accuracy": t.score,
        "test_accuracy": test_accuracy,
        "metrics": t.metrics,
        "params": t.params,
        "flops": t.flops,
        "seed": t.seed,
        "origin": t.origin,
        "checkpoint_sha256": t.checkpoint_sha256,
        "inherited_from": (!t.inherit_from.is_empty()).then(|| t.inherit_from.clone()),
        "data": {
            "dataset": data.dataset,
            "train_images": data.train_images,
            "train_labels": data.train_labels,
            "test_images": data.test_images,
            "test_labels": data.test_labels,
            "folder": data.folder,
            "test_folder": data.test_folder,
            "train_subset": data.train_subset,
            "test_subset": data.test_subset,
            "per_class": data.per_class,
            "validation_fraction": data.validation_fraction,
            "split_seed": data.split_seed,
            "size": data.size,
            "transform": transform,
            "domains": data.domains.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
        },
        "split": {
            "train": null,
            "validation": null,
            "test": null,
            "rule": split_rule(data),
            // Examples of the training split this trial trained on: fewer than `train` for a
            // search trial of `[final] search_subset` (its first examples), else all of them.
            "trained_on": t.metrics.get("train_examples"),
        },
        "lineage": lineage.iter().map(|a| json!({
            "trial_id": a.trial_id,
            "seq": a.seq,
            "origin": a.origin,
            "score": finite(a.score),
            "accepted": a.accepted,
            "status": a.status,
        })).collect::<Vec<_>>(),
        "lineage_truncated": lineage.len() >= MAX_LINEAGE
            && lineage.last().is_some_and(|a| !a.parent_trial_id.is_empty()),
        "torchscript": null,
    })
}

/// How the worker cut the trial's data (see `worker/src/data.rs`), in words.
fn split_rule(data: &proto::DataSpec) -> String {
    let train = match (data.per_class, data.train_subset) {
        (k, _) if k > 0 => format!("the first {k} examples of each class in a permutation"),
        (_, 0) => "a permutation".to_string(),
        (_, n) => format!("the first {n} examples of a permutation"),
    };
    let test = match data.test_subset {
        0 => "the whole test file".to_string(),
        n => format!("the first {n} examples of the test file, in file order"),
    };
    format!(
        "training file: {train} (ChaCha8, seed {seed}), of which the last round(n × {fraction}) are the \
         validation split (the score) and the rest the training split; test split: {test} \
         (reported, never used for selection); images are normalised with the training split's \
         per-channel mean and standard deviation",
        seed = data.split_seed,
        fraction = data.validation_fraction,
    )
}

/// The `torchscript` section of the card from `worker export`'s JSON answer.
fn torchscript_section(traced: &Value) -> Value {
    json!({
        "file": "model.pt",
        "input": traced["input"],
        "normalisation": traced["normalisation"],
        "output": traced["output"],
        "head": traced["head"],
        "val_accuracy": traced["val_accuracy"],
        "test_accuracy": traced["test_accuracy"],
    })
}

/// Writes `model.json` and `MODEL_CARD.md`.
fn write_cards(dir: &Path, card: &Value) -> Result<()> {
    write(dir, "model.json", &serde_json::to_string_pretty(card)?)?;
    write(dir, "MODEL_CARD.md", &markdown_card(card))
}

/// The human-readable model card.
pub fn markdown_card(card: &Value) -> String {
    let num = |v: &Value| match v.as_f64() {
        Some(x) => format!("{x:.4}"),
        None => "—".to_string(),
    };
    let text = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null => "—".to_string(),
        Value::String(_) => "—".to_string(),
        other => other.to_string(),
    };
    let data = &card["data"];
    let split = &card["split"];
    let mut md = format!(
        "# Model card: trial {trial} (seq {seq}) of experiment {exp}\n\n\
         | | |\n|---|---|\n\
         | validation accuracy (the score) | {val} |\n\
         | test accuracy (reported only) | {test} |\n\
         | parameters | {params} |\n\
         | FLOPs per image | {flops} |\n\
         | origin | {origin} |\n\
         | training seed | {seed} |\n\
         | checkpoint (sha256) | `{sha}` |\n\n",
        trial = text(&card["trial_id"]),
        seq = text(&card["seq"]),
        exp = text(&card["experiment_id"]),
        val = num(&card["validation_accuracy"]),
        test = num(&card["test_accuracy"]),
        params = text(&card["params"]),
        flops = text(&card["flops"]),
        origin = text(&card["origin"]).replace('|', "\\|"),
        seed = text(&card["seed"]),
        sha = text(&card["checkpoint_sha256"]),
    );
    md += &format!(
        "## Data\n\n\
         - dataset: {dataset}\n\
         - training subset: {train_subset} (0 = all), validation fraction {fraction}, split seed \
         {split_seed}\n\
         - test subset: {test_subset} (0 = all)\n\
         - examples: {train} training, {val} validation, {test} test\n\
         - this model trained on: {trained_on} training examples\n\
         - transform: {transform}; domains: {domains}\n\n\
         Split: {rule}.\n\n",
        dataset = text(&data["dataset"]),
        train_subset = text(&data["train_subset"]),
        fraction = text(&data["validation_fraction"]),
        split_seed = text(&data["split_seed"]),
        test_subset = text(&data["test_subset"]),
        train = text(&split["train"]),
        trained_on = match split["trained_on"].as_f64() {
            Some(n) => format!("{}", n as u64),
            None => "all the".to_string(),
        },
        val = text(&split["validation"]),
        test = text(&split["test"]),
        transform = match &data["transform"] {
            Value::Null => "none".to_string(),
            t => t.to_string(),
        },
        domains = match data["domains"].as_array() {
            Some(d) if !d.is_empty() => Value::Array(d.clone()).to_string(),
            _ => "one source".to_string(),
        },
        rule = text(&split["rule"]),
    );
    let ts = &card["torchscript"];
    if ts.is_null() {
        md += "## TorchScript\n\nmodel.pt was not written; see `worker export --help`.\n\n";
    } else {
        let input = &ts["input"];
        md += &format!(
            "## Input convention (model.pt)\n\n\
             `float32` images `[N, {c}, {h}, {w}]` (NCHW) with intensities in `[0, 1]` (pixel \
             bytes divided by 255), on the CPU. The module normalises them itself, per channel \
             `(x - mean) / std` with mean {mean} and std {std} (the training split's \
             statistics), and returns the logits `[N, {classes}]` of the network in eval mode \
             (no dropout, batch norm with its running statistics); the class is their arg-max. \
             On the test split it reaches {acc} accuracy.\n\n\
             ## Load in PyTorch\n\n\
             ```python\n\
             import torch\n\
             model = torch.jit.load(\"model.pt\").eval()\n\
             classes = model(images).argmax(dim=1)  # images: float32 [N, {c}, {h}, {w}] in [0, 1]\n\
             ```\n\n",
            c = text(&input["channels"]),
            h = text(&input["height"]),
            w = text(&input["width"]),
            mean = text(&ts["normalisation"]["mean"]),
            std = text(&ts["normalisation"]["std"]),
            classes = text(&ts["output"]["logits"]),
            acc = num(&ts["test_accuracy"]),
        );
    }
    md += "## Lineage\n\nFrom the parent back to the seed; each was mutated into the row above \
           it.\n\n| trial | seq | origin | score | accepted |\n|---|---|---|---|---|\n";
    for a in card["lineage"].as_array().into_iter().flatten() {
        md += &format!(
            "| {} | {} | {} | {} | {} |\n",
            text(&a["trial_id"]),
            text(&a["seq"]),
            text(&a["origin"]).replace('|', "\\|"),
            num(&a["score"]),
            text(&a["accepted"]),
        );
    }
    if card["lineage"].as_array().is_none_or(|l| l.is_empty()) {
        md += "| — (a seed) | | | | |\n";
    }
    if card["lineage_truncated"].as_bool() == Some(true) {
        md += &format!("\n(cut after {MAX_LINEAGE} ancestors)\n");
    }
    md += "\n## Files\n\n\
           - `model.pt`: TorchScript, for `torch.jit.load`\n\
           - `weights.safetensors`: the weights by layer (`b3.weight`, `head.bias`, ...)\n\
           - `genome.json`, `hparams.json`: the architecture and the training settings\n\
           - `data.toml`: the `[data]` section, for `worker evaluate --data-config` and `worker export`\n\
           - `model.json`: this card, machine-readable\n";
    md
}

/// The `worker export` invocation for an export directory.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerCommand {
    /// Its arguments, after the program.
    pub args: Vec<String>,
}

impl WorkerCommand {
    /// The command line to type, with `program` first, quoted for a POSIX shell.
    pub fn shell(&self, program: &str) -> String {
        std::iter::once(program.to_string())
            .chain(self.args.iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `worker export` for the files [`write_model`] wrote to `dir`.
pub fn worker_command(
    dir: &Path,
    t: &TrialRecord,
    fashion_mnist_dir: Option<&Path>,
) -> WorkerCommand {
    let path = |name: &str| dir.join(name).display().to_string();
    let split_seed = t.data.as_ref().map_or(0, |d| d.split_seed);
    let mut args = vec![
        "export".to_string(),
        "--genome".into(),
        path("genome.json"),
        "--weights".into(),
        path("weights.safetensors"),
        "--out".into(),
        path("model.pt"),
        "--data-config".into(),
        path("data.toml"),
        "--split-seed".into(),
        split_seed.to_string(),
    ];
    if let Some(d) = fashion_mnist_dir {
        args.push("--data-dir".into());
        args.push(d.display().to_string());
    }
    WorkerCommand { args }
}

/// The `worker` binary: `$EXPLORE_WORKER_BIN`, else next to this executable, else on `PATH`.
pub fn find_worker() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(WORKER_BIN_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{WORKER_BIN_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let name = format!("worker{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(&name)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(&name));
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "no `worker` binary to write model.pt (looked next to this executable and on \
                 PATH; set {WORKER_BIN_ENV} to name one)"
            )
        })
}

/// Runs `worker export` and returns its JSON answer.
fn trace(worker: &Path, command: &WorkerCommand) -> Result<Value> {
    let output = Command::new(worker)
        .args(&command.args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .with_context(|| format!("cannot run {}", worker.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        bail!(
            "{} export failed ({}): {}",
            worker.display(),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line)
        .with_context(|| format!("{} export printed no JSON: {stdout}", worker.display()))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n"))
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u32, parent: &str) -> TrialRecord {
        TrialRecord {
            trial_id: format!("trial-{seq:016}"),
            experiment_id: "exp-1".into(),
            seq,
            parent_trial_id: parent.into(),
            status: "completed".into(),
            origin: format!("mutate {seq}"),
            score: 0.5 + seq as f64 / 100.0,
            accepted: seq.is_multiple_of(2),
            checkpoint_sha256: "ab".repeat(32),
            data: Some(proto::DataSpec {
                dataset: "fashion-mnist".into(),
                train_subset: 2000,
                test_subset: 500,
                validation_fraction: 0.2,
                split_seed: 11,
                ..Default::default()
            }),
            metrics: [("test_accuracy".to_string(), 0.81)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_card_has_data_split_scores_and_lineage_from_parent_to_seed() {
        let t = record(3, "trial-0000000000000002");
        let lineage = [record(2, "trial-0000000000000001"), record(1, "")];
        let card = model_card(&t, t.data.as_ref().unwrap(), &lineage);
        assert_eq!(card["test_accuracy"], json!(0.81));
        assert_eq!(card["data"]["test_subset"], json!(500));
        assert_eq!(card["data"]["transform"], Value::Null);
        assert_eq!(card["lineage"][0]["seq"], json!(2));
        assert_eq!(card["lineage"][1]["origin"], json!("mutate 1"));
        assert_eq!(card["lineage"][0]["accepted"], json!(true));
        assert_eq!(card["lineage_truncated"], json!(false));
        let rule = card["split"]["rule"].as_str().unwrap();
        assert!(
            rule.contains("first 500 examples of the test file"),
            "{rule}"
        );
        let md = markdown_card(&card);
        assert!(
            md.contains("| trial-0000000000000002 | 2 | mutate 2 | 0.5200 | true |"),
            "{md}"
        );
        assert!(md.contains("model.pt was not written"), "{md}");
    }

    #[test]
    fn the_markdown_card_says_how_to_load_the_module() {
        let t = record(1, "");
        let mut card = model_card(&t, t.data.as_ref().unwrap(), &[]);
        card["torchscript"] = torchscript_section(&json!({
            "input": {"channels": 1, "height": 28, "width": 28},
            "normalisation": {"mean": [0.29], "std": [0.35]},
            "output": {"logits": 10},
            "test_accuracy": 0.81,
        }));
        let md = markdown_card(&card);
        assert!(md.contains("torch.jit.load(\"model.pt\")"), "{md}");
        assert!(md.contains("`[N, 1, 28, 28]`"), "{md}");
        assert!(md.contains("mean [0.29] and std [0.35]"), "{md}");
        assert!(md.contains("a seed"), "{md}");
    }

    #[test]
    fn the_worker_command_is_typeable() {
        let t = record(1, "");
        let cmd = worker_command(Path::new("/tmp/my model"), &t, Some(Path::new("/data/f")));
        let line = cmd.shell("worker");
        assert!(
            line.starts_with("worker export --genome '/tmp/my model/genome.json' --weights"),
            "{line}"
        );
        assert!(
            line.ends_with("--split-seed 11 --data-dir /data/f"),
            "{line}"
        );
    }

    #[test]
    fn the_data_section_round_trips_through_toml() {
        let t = record(1, "");
        let text = data_toml(t.data.as_ref().unwrap()).unwrap();
        let table: toml::Table = text.parse().unwrap();
        let cfg: explore_common::spec::DataConfig = table["data"].clone().try_into().unwrap();
        assert_eq!(cfg.dataset, "fashion-mnist");
        assert_eq!(cfg.train_subset, 2000);
        assert_eq!(cfg.test_subset, 500);
        cfg.validate().unwrap();
    }

    #[tokio::test]
    async fn a_trial_without_a_checkpoint_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = record(1, "");
        t.checkpoint_sha256.clear();
        t.status = "failed".into();
        // Never connected: the check comes first.
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let mut client = explore_common::client::admin_client(
            channel,
            &explore_common::client::BearerToken::new("x").unwrap(),
        );
        let out = dir.path().join("out");
        let err = write_model(&mut client, &t, &out).await.unwrap_err();
        assert!(err.to_string().contains("has no checkpoint"), "{err}");
        assert!(!out.exists());
    }
}
