//! Transfer experiments: seeds derived from a source experiment's models on submission, probed
//! and ranked before they are fine-tuned (S2).

use super::*;
use crate::store::TrialKind;
use explore_common::hparams::Objective;

/// Runs a source experiment of `scores.len()` trials named `name`, each completed with an
/// uploaded checkpoint and its score.
async fn source_experiment(sched: &Scheduler, name: &str, scores: &[f64]) -> ExperimentId {
    let text = format!(
        "name = \"{name}\"\n[budget]\nmax_trials = {}\n[data]\ndataset = \"fashion-mnist\"\ntransform = {{ rotate = 10 }}\n",
        scores.len()
    );
    let id = within(sched.submit(ExperimentSpec::from_toml(&text).unwrap()))
        .await
        .unwrap();
    let w = register(sched, 1).await;
    for &score in scores {
        let t = lease(sched, &w).await;
        finish_with_checkpoint(sched, &w, &t, score).await;
    }
    // Its worker leaves: an idle live worker would have the next experiment's last queued
    // trials kept for it (see `store::prefetch_would_starve`).
    within(sched.deregister(w.as_str())).await.unwrap();
    id
}

/// The checkpoint of the model among `pool` that scored `score`.
fn checkpoint_scoring(pool: &[TrialRow], score: f64) -> String {
    pool.iter()
        .find(|t| t.score == Some(score))
        .and_then(|t| t.checkpoint_sha256.clone())
        .expect("a completed model with that score and a checkpoint")
}

fn transfer_spec(extra: &str) -> ExperimentSpec {
    spec(
        20,
        &format!("[data]\ndataset = \"mnist\"\nper_class = 20\n{extra}"),
    )
}

#[tokio::test]
async fn a_transfer_experiment_starts_from_the_best_source_models_with_their_weights() {
    let h = Harness::long().await;
    let source = source_experiment(&h.sched, "fashion-source", &[0.71, 0.93, 0.85, 0.60]).await;
    let source_trials = trials(&h.sched, &source).await;
    let by_score = |s: f64| source_trials.iter().find(|t| t.score == Some(s)).unwrap();
    let text = "[training]\nobjective = \"gradient_mixing\"\n[transfer]\nfrom = \"fashion-source\"\nprobe = false\nmodels = 2\nsettings = [\n { optimizer = \"adamw\", learning_rate = 0.001, schedule = \"constant\", batch_size = 32, weight_decay = 0.0, epochs = 2 },\n { optimizer = \"sgd\", learning_rate = 0.01, schedule = \"cosine\", batch_size = 32, weight_decay = 0.0, epochs = 3 },\n]\n";
    let id = within(h.sched.submit(transfer_spec(text))).await.unwrap();
    let v = view(&h.sched, &id).await;
    let stored: ExperimentSpec = serde_json::from_str(&v.row.spec_json).unwrap();
    // two models x two settings, best model first
    assert_eq!(stored.seeds.len(), 4);
    let expected = [0.93, 0.93, 0.85, 0.85];
    for (seed, score) in stored.seeds.iter().zip(expected) {
        let t = seed.transfer.as_ref().unwrap();
        assert_eq!(t.trial_id, by_score(score).id.as_str());
        assert_eq!(
            Some(&t.checkpoint_sha256),
            by_score(score).checkpoint_sha256.as_ref()
        );
        assert!(t.label.contains("fashion-source"), "{}", t.label);
        assert_eq!(
            seed.hparams.as_ref().unwrap().objective,
            Objective::GradientMixing
        );
    }
    assert_eq!(stored.seeds[1].hparams.as_ref().unwrap().epochs, 3);
    // the gradient-mixing fine-tune replays the source's data
    let history = stored.data.history.as_ref().unwrap();
    assert_eq!(history.dataset, "fashion-mnist");
    assert_eq!(history.transform.rotate, 10.0);
    // the first trials are the seeds, inheriting their models' checkpoints
    let w = register(&h.sched, 1).await;
    let first = lease(&h.sched, &w).await;
    assert_eq!(first.inherit_from, by_score(0.93).checkpoint_sha256);
    assert!(
        first.origin.contains("transfer fashion-source"),
        "{}",
        first.origin
    );
    assert!(first.parent_id.is_none());
}

#[tokio::test]
async fn transfer_errors_say_what_is_missing() {
    let h = Harness::long().await;
    let unknown = transfer_spec("[transfer]\nfrom = \"nowhere\"\n");
    assert_code(within(h.sched.submit(unknown)).await, tonic::Code::NotFound);

    // a source without completed models
    let empty = within(h.sched.submit(spec(3, ""))).await.unwrap();
    let err = within(h.sched.submit(transfer_spec(&format!(
        "[transfer]\nfrom = \"{}\"\n",
        empty.as_str()
    ))))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("no completed model"), "{err}");

    // every model ruled out by a constraint, named (a fresh pool: the empty source above still
    // has queued trials a worker would lease)
    let h = Harness::long().await;
    source_experiment(&h.sched, "big-models", &[0.9, 0.8]).await;
    let err = within(h.sched.submit(transfer_spec(
        "[search]\nmax_params = 1000\n[transfer]\nfrom = \"big-models\"\n",
    )))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("search.max_params") && err.contains("(2"),
        "{err}"
    );

    // seeds of its own are refused
    let err = within(h.sched.submit(transfer_spec(
        "[transfer]\nfrom = \"big-models\"\n[[seeds]]\npreset = \"mlp\"\n",
    )))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("seeds"), "{err}");
}

#[tokio::test]
async fn a_plain_transfer_keeps_the_data_it_was_given() {
    let h = Harness::long().await;
    source_experiment(&h.sched, "src", &[0.5]).await;
    let id = within(
        h.sched
            .submit(transfer_spec("[transfer]\nfrom = \"src\"\n")),
    )
    .await
    .unwrap();
    let stored: ExperimentSpec =
        serde_json::from_str(&view(&h.sched, &id).await.row.spec_json).unwrap();
    assert!(stored.data.history.is_none());
    assert_eq!(stored.seeds.len(), 1);
    assert_eq!(
        stored.seeds[0].hparams.as_ref().unwrap().objective,
        Objective::Plain
    );
}

/// Two settings for every model: a short and a longer fine-tune.
const TWO_SETTINGS: &str = "settings = [\n { optimizer = \"adamw\", learning_rate = 0.001, schedule = \"constant\", batch_size = 32, weight_decay = 0.0, epochs = 1 },\n { optimizer = \"sgd\", learning_rate = 0.01, schedule = \"cosine\", batch_size = 32, weight_decay = 0.0, epochs = 2 },\n]\n";

/// A probe's result as a worker reports it.
fn probe_result(logme: f64, latency_ms: f64) -> TrialResult {
    TrialResult {
        score: 0.5,
        metrics: BTreeMap::from([
            ("probe.logme".to_string(), logme),
            ("probe.leep".to_string(), -1.0 + logme / 10.0),
            ("probe.nce".to_string(), -1.2 + logme / 10.0),
            ("probe.latency_ms".to_string(), latency_ms),
            ("probe.examples".to_string(), 200.0),
            ("probe.classes".to_string(), 10.0),
        ]),
        checkpoint_sha256: None,
        epochs_run: 0,
    }
}

/// Leases every probe of a fresh transfer experiment and completes each with the LogME (and
/// latency) `scores` gives its source model's checkpoint.
async fn run_probes(
    sched: &Scheduler,
    w: &WorkerId,
    count: usize,
    scores: impl Fn(&str) -> (f64, f64),
) -> Vec<TrialRow> {
    let mut probes = Vec::new();
    for _ in 0..count {
        let t = lease(sched, w).await;
        assert_eq!(t.kind().unwrap(), TrialKind::Probe, "{}", t.origin);
        probes.push(t);
    }
    // nothing else is offered while the probes are out: the fine-tunes wait for their ranking
    assert!(within(sched.acquire(w.as_str(), Duration::from_millis(50)))
        .await
        .unwrap()
        .is_none());
    for t in &probes {
        let (logme, latency) = scores(t.inherit_from.as_deref().unwrap());
        let answer = within(sched.complete(
            w.as_str(),
            t.id.as_str(),
            t.attempt as u32,
            probe_result(logme, latency),
        ))
        .await
        .unwrap();
        assert!(answer.accepted, "{answer:?}");
    }
    probes
}

#[tokio::test]
async fn a_probing_transfer_probes_each_model_once_then_fine_tunes_the_best_logme_first() {
    let h = Harness::long().await;
    let source = source_experiment(&h.sched, "src", &[0.93, 0.85, 0.71]).await;
    let source_trials = trials(&h.sched, &source).await;
    let sha_of = |s: f64| checkpoint_scoring(&source_trials, s);
    let text = format!("[transfer]\nfrom = \"src\"\nmodels = 3\n{TWO_SETTINGS}");
    let id = within(h.sched.submit(transfer_spec(&text))).await.unwrap();
    // three probes (one per model, not per setting), outside the trial budget
    let all = trials(&h.sched, &id).await;
    assert_eq!(all.len(), 3, "only probes are queued at first");
    assert!(all.iter().all(|t| t.kind == "probe" && t.seq < 0));
    let probed: HashSet<_> = all
        .iter()
        .map(|t| t.inherit_from.clone().unwrap())
        .collect();
    assert_eq!(probed.len(), 3);
    assert_eq!(counts(&h.sched, &id).await.budgeted(), 0);

    // LogME ranks the models against their source scores: 0.71 best, then 0.85, then 0.93
    let logme = |sha: &str| {
        if sha == sha_of(0.71) {
            (1.5, 1.0)
        } else if sha == sha_of(0.85) {
            (0.5, 1.0)
        } else {
            (-0.5, 1.0)
        }
    };
    let w = register(&h.sched, 1).await;
    run_probes(&h.sched, &w, 3, logme).await;
    let mut order = Vec::new();
    for _ in 0..6 {
        let t = lease(&h.sched, &w).await;
        assert_eq!(t.kind().unwrap(), TrialKind::Train);
        assert!(t.origin.contains("ranked by LogME"), "{}", t.origin);
        assert!(t.seed_index.is_some());
        order.push(t.inherit_from.clone().unwrap());
        finish_with_checkpoint(&h.sched, &w, &t, 0.5).await;
    }
    let expected = [0.71, 0.71, 0.85, 0.85, 0.93, 0.93].map(sha_of);
    assert_eq!(order, expected);
    // every seed ran exactly once
    let indices: HashSet<i64> = trials(&h.sched, &id)
        .await
        .iter()
        .filter_map(|t| t.seed_index)
        .collect();
    assert_eq!(indices.len(), 6);
    // probes are never the best model, nor counted as results
    let v = view(&h.sched, &id).await;
    let best = trial(&h.sched, v.row.best_trial_id.as_ref().unwrap()).await;
    assert_eq!(best.kind, "train");
    assert_eq!(v.counts.completed, 6);
}

#[tokio::test]
async fn models_slower_than_max_latency_are_never_fine_tuned() {
    let h = Harness::long().await;
    let source = source_experiment(&h.sched, "src", &[0.93, 0.85]).await;
    let fast = checkpoint_scoring(&trials(&h.sched, &source).await, 0.85);
    let text = "[transfer]\nfrom = \"src\"\nmodels = 2\nmax_latency_ms = 2.0\n";
    let id = within(h.sched.submit(transfer_spec(text))).await.unwrap();
    let w = register(&h.sched, 1).await;
    // the better model by LogME is too slow
    run_probes(&h.sched, &w, 2, |sha| {
        if sha == fast {
            (0.1, 1.5)
        } else {
            (2.0, 9.0)
        }
    })
    .await;
    let t = lease(&h.sched, &w).await;
    assert_eq!(t.inherit_from.as_deref(), Some(fast.as_str()));
    finish_with_checkpoint(&h.sched, &w, &t, 0.6).await;
    // the slow model's seed is skipped: the next trial mutates the fine-tuned fast model
    let next = lease(&h.sched, &w).await;
    assert_eq!(next.seed_index, None, "{}", next.origin);
    assert_eq!(next.parent_id.as_ref(), Some(&t.id));
    let seeds_run = trials(&h.sched, &id)
        .await
        .iter()
        .filter(|t| t.seed_index.is_some())
        .count();
    assert_eq!(seeds_run, 1);

    // every model too slow: the experiment ends and says which limit and what was measured
    let h = Harness::long().await;
    source_experiment(&h.sched, "src", &[0.93, 0.85]).await;
    let id = within(h.sched.submit(transfer_spec(
        "[transfer]\nfrom = \"src\"\nmodels = 2\nmax_latency_ms = 0.5\n",
    )))
    .await
    .unwrap();
    let w = register(&h.sched, 1).await;
    run_probes(&h.sched, &w, 2, |_| (1.0, 3.25)).await;
    assert_eq!(
        counts(&h.sched, &id).await.budgeted(),
        0,
        "nothing was queued"
    );
    let v = view(&h.sched, &id).await;
    assert_ne!(v.row.status, ExperimentStatus::Running);
    assert!(
        v.row.status_reason.contains("transfer.max_latency_ms")
            && v.row.status_reason.contains("3.250"),
        "{}",
        v.row.status_reason
    );
}

#[tokio::test]
async fn a_failed_probe_puts_its_model_after_the_probed_ones() {
    let h = Harness::long().await;
    let source = source_experiment(&h.sched, "src", &[0.93, 0.85]).await;
    let best = checkpoint_scoring(&trials(&h.sched, &source).await, 0.93);
    within(
        h.sched
            .submit(transfer_spec("[transfer]\nfrom = \"src\"\nmodels = 2\n")),
    )
    .await
    .unwrap();
    let w = register(&h.sched, 1).await;
    let a = lease(&h.sched, &w).await;
    let b = lease(&h.sched, &w).await;
    for t in [&a, &b] {
        if t.inherit_from.as_deref() == Some(best.as_str()) {
            within(h.sched.fail(w.as_str(), t.id.as_str(), 1, "no such device"))
                .await
                .unwrap();
        } else {
            within(
                h.sched
                    .complete(w.as_str(), t.id.as_str(), 1, probe_result(0.2, 1.0)),
            )
            .await
            .unwrap();
        }
    }
    let first = lease(&h.sched, &w).await;
    assert_ne!(first.inherit_from.as_deref(), Some(best.as_str()));
    finish_with_checkpoint(&h.sched, &w, &first, 0.6).await;
    let second = lease(&h.sched, &w).await;
    assert_eq!(second.inherit_from.as_deref(), Some(best.as_str()));
    assert!(
        second.origin.contains("no probe result"),
        "{}",
        second.origin
    );
}

#[tokio::test]
async fn a_probe_result_is_checked_like_any_other() {
    let h = Harness::long().await;
    source_experiment(&h.sched, "src", &[0.9]).await;
    within(
        h.sched
            .submit(transfer_spec("[transfer]\nfrom = \"src\"\n")),
    )
    .await
    .unwrap();
    let w = register(&h.sched, 1).await;
    let probe = lease(&h.sched, &w).await;
    let mut bad = probe_result(0.1, 1.0);
    bad.metrics.insert("probe.logme".into(), f64::NAN);
    assert_code(
        within(h.sched.complete(w.as_str(), probe.id.as_str(), 1, bad)).await,
        tonic::Code::InvalidArgument,
    );
    assert_eq!(
        trial(&h.sched, &probe.id).await.status,
        TrialStatus::Leased,
        "nothing changed"
    );
}

#[tokio::test]
async fn with_enough_history_the_predictor_chooses_and_its_prediction_is_recorded() {
    let h = Harness::long().await;
    let source = source_experiment(&h.sched, "src", &[0.93, 0.85, 0.71]).await;
    let source_trials = trials(&h.sched, &source).await;
    let sha_of = |s: f64| checkpoint_scoring(&source_trials, s);
    let three_settings = "settings = [\n { optimizer = \"adamw\", learning_rate = 0.001, schedule = \"constant\", batch_size = 32, weight_decay = 0.0, epochs = 1 },\n { optimizer = \"adamw\", learning_rate = 0.003, schedule = \"constant\", batch_size = 32, weight_decay = 0.0, epochs = 1 },\n { optimizer = \"adamw\", learning_rate = 0.0003, schedule = \"constant\", batch_size = 32, weight_decay = 0.0, epochs = 1 },\n]\n";
    // the truth the predictor should learn: higher LogME and a larger step fine-tune better
    let truth = |logme: f64, lr: f64| 0.6 + 0.1 * logme + 0.1 * (lr / 0.001).log10();
    let lr_of = |t: &TrialRow| {
        HyperParams::from_json(&t.hparams_json)
            .unwrap()
            .learning_rate
    };

    // 1. a first transfer runs all nine pairs, ranked by LogME (no history yet)
    let first_logme = |sha: &str| {
        if sha == sha_of(0.93) {
            1.5
        } else if sha == sha_of(0.85) {
            0.5
        } else {
            -0.5
        }
    };
    let text = format!("[transfer]\nfrom = \"src\"\nmodels = 3\n{three_settings}");
    let first = within(h.sched.submit(spec(
        9,
        &format!("[data]\ndataset = \"mnist\"\nper_class = 20\n{text}"),
    )))
    .await
    .unwrap();
    // Two slots: the queue is topped up to two, as when the source experiment's worker was
    // still connected, so all nine first fine-tunes are proposed on thin history.
    let w = register(&h.sched, 2).await;
    run_probes(&h.sched, &w, 3, |sha| (first_logme(sha), 1.0)).await;
    for _ in 0..9 {
        let t = lease(&h.sched, &w).await;
        assert!(t.origin.contains("history too thin"), "{}", t.origin);
        let score = truth(first_logme(t.inherit_from.as_deref().unwrap()), lr_of(&t));
        finish_with_checkpoint(&h.sched, &w, &t, score).await;
    }
    assert_eq!(
        view(&h.sched, &first).await.row.status,
        ExperimentStatus::Completed
    );

    // 2. a second transfer on another task: other LogMEs, the same truth
    let second_logme = |sha: &str| {
        if sha == sha_of(0.85) {
            2.0
        } else if sha == sha_of(0.93) {
            1.0
        } else {
            0.0
        }
    };
    let id = within(h.sched.submit(spec(
        3,
        &format!("[data]\ndataset = \"mnist\"\nper_class = 10\n{text}"),
    )))
    .await
    .unwrap();
    run_probes(&h.sched, &w, 3, |sha| (second_logme(sha), 1.0)).await;
    let chosen = lease(&h.sched, &w).await;
    assert!(
        chosen.origin.contains("predicted") && chosen.origin.contains("fitted on 9"),
        "{}",
        chosen.origin
    );
    assert_eq!(chosen.inherit_from, Some(sha_of(0.85)), "{}", chosen.origin);
    assert_eq!(lr_of(&chosen), 0.003, "{}", chosen.origin);
    let (mean, std) = (
        chosen.predicted_score.unwrap(),
        chosen.predicted_std.unwrap(),
    );
    let expected = truth(2.0, 0.003);
    assert!(
        (mean - expected).abs() < 0.05,
        "predicted {mean}, truth {expected}"
    );
    assert!(std > 0.0 && std < 0.1, "{std}");
    // two workers' slots: the runner-up was queued with it, on the same fit
    let runner_up = lease(&h.sched, &w).await;
    assert!(
        runner_up.origin.contains("fitted on 9"),
        "{}",
        runner_up.origin
    );
    assert!(runner_up.predicted_score.unwrap() <= mean);
    // the next choice is refitted on the first result too, and the budget holds
    finish_with_checkpoint(&h.sched, &w, &chosen, expected).await;
    let third = lease(&h.sched, &w).await;
    assert!(third.origin.contains("fitted on 10"), "{}", third.origin);
    assert_eq!(counts(&h.sched, &id).await.budgeted(), 3);
}

#[tokio::test]
async fn a_fine_tune_that_no_longer_fits_the_epoch_budget_is_passed_over() {
    let h = Harness::long().await;
    let source = source_experiment(&h.sched, "src", &[0.93, 0.85]).await;
    let best = checkpoint_scoring(&trials(&h.sched, &source).await, 0.93);
    // a 2-epoch SGD setting first, a 1-epoch AdamW one second; 4 epochs in all
    let settings = "settings = [\n { optimizer = \"sgd\", learning_rate = 0.01, schedule = \"constant\", batch_size = 32, weight_decay = 0.0, epochs = 2 },\n { optimizer = \"adamw\", learning_rate = 0.001, schedule = \"constant\", batch_size = 32, weight_decay = 0.0, epochs = 1 },\n]\n";
    let text = format!(
        "name = \"t\"\n[budget]\nmax_trials = 20\nmax_epochs = 4\n[data]\ndataset = \"mnist\"\nper_class = 20\n[transfer]\nfrom = \"src\"\nmodels = 2\n{settings}"
    );
    let id = within(h.sched.submit(ExperimentSpec::from_toml(&text).unwrap()))
        .await
        .unwrap();
    let w = register(&h.sched, 1).await;
    run_probes(&h.sched, &w, 2, |sha| {
        (if sha == best { 1.0 } else { 0.0 }, 1.0)
    })
    .await;
    let mut ran = Vec::new();
    for _ in 0..3 {
        let t = lease(&h.sched, &w).await;
        let hp = HyperParams::from_json(&t.hparams_json).unwrap();
        ran.push((
            t.inherit_from.clone().unwrap() == best,
            hp.optimizer,
            hp.epochs,
        ));
        finish_with_checkpoint(&h.sched, &w, &t, 0.5).await;
    }
    // the best LogME model's two settings (2 + 1 epochs), then the other model's 1-epoch one:
    // its SGD setting, ranked first, would be cut from 2 epochs to the 1 left
    use explore_common::hparams::Optimizer;
    assert_eq!(
        ran,
        [
            (true, Optimizer::Sgd, 2),
            (true, Optimizer::AdamW, 1),
            (false, Optimizer::AdamW, 1)
        ]
    );
    let v = view(&h.sched, &id).await;
    assert_eq!(
        v.row.status,
        ExperimentStatus::Completed,
        "{}",
        v.row.status_reason
    );
}
