//! Transfer experiments: seeds derived from a source experiment's models on submission.

use super::*;
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
    id
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
    let text = "[training]\nobjective = \"gradient_mixing\"\n[transfer]\nfrom = \"fashion-source\"\nmodels = 2\nsettings = [\n { optimizer = \"adamw\", learning_rate = 0.001, schedule = \"constant\", batch_size = 32, weight_decay = 0.0, epochs = 2 },\n { optimizer = \"sgd\", learning_rate = 0.01, schedule = \"cosine\", batch_size = 32, weight_decay = 0.0, epochs = 3 },\n]\n";
    let id = within(h.sched.submit(transfer_spec(text))).await.unwrap();
    let v = view(&h.sched, &id).await;
    let stored: ExperimentSpec = serde_json::from_str(&v.row.spec_json).unwrap();
    // two models x two settings, best model first
    assert_eq!(stored.seeds.len(), 4);
    let expected = [0.93, 0.93, 0.85, 0.85];
    for (seed, score) in stored.seeds.iter().zip(expected) {
        let t = seed.transfer.as_ref().unwrap();
        assert_eq!(t.trial_id, by_score(score).id);
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
