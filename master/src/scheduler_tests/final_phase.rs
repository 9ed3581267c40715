//! The final-training phase (`[final]`, issue 14): once the search budget is spent, exactly
//! `top_k` final trials (fewer when fewer distinct architectures completed) retrain the best
//! distinct genomes for `epochs` epochs inside the trial and epoch budgets; the experiment
//! completes only when they have ended, the best final trial by validation score is the
//! result, and a restart, a stop or a failure neither loses nor doubles one.

use std::collections::HashMap;

use super::*;
use crate::scheduler::{search_epochs, search_trials};

/// Two seeds of different architectures and hyperparameter-only mutations: the pool holds
/// exactly two distinct genomes.
const TWO_GENOMES: &str = "[search]\narchitecture_mutation_probability = 0.0\n\
    [[seeds]]\npreset = \"cnn2\"\n[[seeds]]\npreset = \"cnn3\"\n";

/// A spec with `budget` lines, a `[final]` section and `rest`.
fn final_spec(max_trials: u32, budget: &str, fin: &str, rest: &str) -> ExperimentSpec {
    spec(max_trials, &format!("{budget}[final]\n{fin}\n{rest}"))
}

/// A distinct, unordered score for every seq below 97.
fn spread(t: &TrialRow) -> f64 {
    0.5 + 0.4 * ((t.seq * 7919) % 97) as f64 / 97.0
}

fn planned_epochs(t: &TrialRow) -> u32 {
    HyperParams::from_json(&t.hparams_json).unwrap().epochs
}

/// Completes a held trial with a real checkpoint, having trained all its planned epochs.
async fn complete_full(sched: &Scheduler, w: &WorkerId, t: &TrialRow, score: f64) {
    let mut upload = within(sched.artifacts().begin_upload()).await.unwrap();
    within(upload.write(format!("weights of {}", t.id).as_bytes()))
        .await
        .unwrap();
    let (sha, _) = within(upload.finish()).await.unwrap();
    let r = TrialResult {
        checkpoint_sha256: Some(sha),
        epochs_run: planned_epochs(t),
        ..result(score)
    };
    let answer = within(sched.complete(w.as_str(), t.id.as_str(), t.attempt as u32, r))
        .await
        .unwrap();
    assert_eq!(answer.reason, "", "{answer:?}");
}

/// Trains the search with one single-slot worker until its final phase begins (or the
/// experiment ends): each trial reports its first epoch and completes with `score(trial)` and a
/// checkpoint. Returns the number of search trials trained.
async fn run_search(
    sched: &Scheduler,
    w: &WorkerId,
    id: &ExperimentId,
    score: impl Fn(&TrialRow) -> f64,
) -> usize {
    let mut n = 0;
    loop {
        let v = view(sched, id).await;
        if v.row.status != ExperimentStatus::Running || v.row.in_final_phase() {
            return n;
        }
        assert!(n < 200, "the search does not end");
        let t = lease(sched, w).await;
        assert!(
            !t.is_final(),
            "a final trial during the search: {}",
            t.origin
        );
        let s = score(&t);
        n += 1;
        // Early stopping may prune it (the default median rule); it then has its result.
        if let HeartbeatAnswer::Stop(_) = report_epoch(sched, w, &t, 1, s).await {
            continue;
        }
        complete_full(sched, w, &t, s).await;
    }
}

/// The ids of the best completed search trial of each of the `k` best genomes, best first.
fn expected_parents(all: &[TrialRow], k: usize) -> Vec<TrialId> {
    let mut best: HashMap<&str, &TrialRow> = HashMap::new();
    for t in all
        .iter()
        .filter(|t| !t.is_final() && t.status == TrialStatus::Completed)
    {
        let entry = best.entry(t.genome_hash.as_str()).or_insert(t);
        if (t.score, -t.seq) > (entry.score, -entry.seq) {
            *entry = t;
        }
    }
    let mut rows: Vec<&TrialRow> = best.into_values().collect();
    rows.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap()
            .then(a.seq.cmp(&b.seq))
    });
    rows.into_iter().take(k).map(|t| t.id.clone()).collect()
}

fn finals(all: &[TrialRow]) -> Vec<TrialRow> {
    all.iter().filter(|t| t.is_final()).cloned().collect()
}

#[tokio::test]
async fn the_final_phase_retrains_exactly_the_k_best_distinct_genomes_within_the_budget() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let s = final_spec(
        14,
        "max_epochs = 60\n",
        "top_k = 3\nepochs = 7",
        "[inheritance]\nfine_tune_epochs = 2\n",
    );
    assert_eq!((search_trials(&s), search_epochs(&s)), (11, Some(39)));
    let id = within(h.sched.submit(s)).await.unwrap();
    let searched = run_search(&h.sched, &w, &id, spread).await;

    let all = trials(&h.sched, &id).await;
    let fin = finals(&all);
    let v = view(&h.sched, &id).await;
    assert_eq!(
        v.row.status,
        ExperimentStatus::Running,
        "{}",
        v.row.status_reason
    );
    assert!(
        v.row
            .status_reason
            .starts_with("final training: 3 architectures for 7 epochs"),
        "{}",
        v.row.status_reason
    );
    // Exactly K final trials, queued at once, retraining the K best distinct genomes.
    assert_eq!(fin.len(), 3, "after {searched} search trials");
    let parents: Vec<TrialId> = fin.iter().map(|t| t.parent_id.clone().unwrap()).collect();
    assert_eq!(parents, expected_parents(&all, 3));
    let genomes: HashSet<&str> = fin.iter().map(|t| t.genome_hash.as_str()).collect();
    assert_eq!(genomes.len(), 3);
    for t in &fin {
        let parent = all
            .iter()
            .find(|p| Some(&p.id) == t.parent_id.as_ref())
            .unwrap();
        assert_eq!(t.status, TrialStatus::Queued);
        assert_eq!(t.genome_json, parent.genome_json);
        assert_eq!(planned_epochs(t), 7);
        let mut hp = HyperParams::from_json(&parent.hparams_json).unwrap();
        hp.epochs = 7;
        assert_eq!(t.hparams_json, hp.to_json());
        // From weights (the default): the parent's own checkpoint.
        assert!(parent.checkpoint_sha256.is_some());
        assert_eq!(t.inherit_from, parent.checkpoint_sha256);
        assert_eq!(
            t.origin,
            format!(
                "final: retrain of {} for 7 epochs from its weights",
                parent.id
            )
        );
    }
    // The search stayed inside its share: the final phase's reservation is untouched.
    let search_epochs_used: i64 = all.iter().filter(|t| !t.is_final()).map(|t| t.epoch).sum();
    assert!(search_epochs_used <= 39, "{search_epochs_used}");
    assert!(v.counts.budgeted() <= 14, "{:?}", v.counts);
    assert!(v.epochs.committed <= 60, "{:?}", v.epochs);

    // Early stopping never prunes a final trial, however far below its peers.
    let first = lease(&h.sched, &w).await;
    assert_eq!(first.id, fin[0].id);
    for epoch in 1..=3 {
        assert_eq!(
            report_epoch(&h.sched, &w, &first, epoch, 0.01).await,
            HeartbeatAnswer::Continue
        );
    }
    complete_full(&h.sched, &w, &first, 0.6).await;
    for t in &fin[1..] {
        assert_eq!(
            view(&h.sched, &id).await.row.status,
            ExperimentStatus::Running
        );
        let held = lease(&h.sched, &w).await;
        assert_eq!(held.id, t.id);
        complete_full(&h.sched, &w, &held, 0.6).await;
    }
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Completed);
    assert!(
        v.row.status_reason.starts_with(
            "final training done: 3 architectures retrained for 7 epochs (3 completed, 0 failed)"
        ),
        "{}",
        v.row.status_reason
    );
    let all = trials(&h.sched, &id).await;
    assert_eq!(finals(&all).len(), 3);
    let final_epochs: i64 = finals(&all).iter().map(|t| t.epoch).sum();
    assert_eq!(final_epochs, 21);
    assert!(v.epochs.committed <= 60, "{:?}", v.epochs);
    assert_eq!(v.counts.budgeted(), searched as u32 + 3);
    assert!(v.counts.budgeted() <= 14);
}

#[tokio::test]
async fn two_trials_of_one_genome_count_once_and_the_best_final_trial_is_the_result() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(
        h.sched
            .submit(final_spec(10, "", "top_k = 2\nepochs = 5", TWO_GENOMES)),
    )
    .await
    .unwrap();
    // Every trial of the first seed's genome scores above every trial of the second's, so the
    // two best trials share a genome.
    let first_genome = std::sync::Mutex::new(None::<String>);
    run_search(&h.sched, &w, &id, |t| {
        let mut g = first_genome.lock().unwrap();
        let hash = g.get_or_insert_with(|| t.genome_hash.clone());
        if *hash == t.genome_hash {
            0.8 + spread(t) / 10.0
        } else {
            0.5 + spread(t) / 10.0
        }
    })
    .await;
    let all = trials(&h.sched, &id).await;
    let fin = finals(&all);
    assert_eq!(fin.len(), 2);
    let parents: Vec<TrialId> = fin.iter().map(|t| t.parent_id.clone().unwrap()).collect();
    assert_eq!(parents, expected_parents(&all, 2));
    assert_ne!(fin[0].genome_hash, fin[1].genome_hash);
    let best_search = view(&h.sched, &id).await.row.best_trial_id.unwrap();
    assert_eq!(parents[0], best_search);

    // The final phase's models are the result: the first final trial becomes the best even
    // with a score below the search's best; the next one replaces it only with a higher score.
    let search_best_score = trial(&h.sched, &best_search).await.score.unwrap();
    let low = lease(&h.sched, &w).await;
    complete_full(&h.sched, &w, &low, 0.51).await;
    assert!(0.51 < search_best_score);
    assert_eq!(
        view(&h.sched, &id).await.row.best_trial_id.as_ref(),
        Some(&low.id)
    );
    let high = lease(&h.sched, &w).await;
    complete_full(&h.sched, &w, &high, 0.99).await;
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Completed);
    assert_eq!(v.row.best_trial_id.as_ref(), Some(&high.id));
    assert!(v.best.unwrap().is_final());
    // Not a step of the search: recorded as accepted, no chain moved by it.
    let high = trial(&h.sched, &high.id).await;
    assert_eq!(high.accepted, Some(true));
    let mut conn = within(h.sched.store().conn()).await.unwrap();
    let chains = conn.list_chains(&id).await.unwrap();
    assert!(chains
        .iter()
        .all(|c| c.current_trial_id.as_ref() != Some(&high.id)));
}

#[tokio::test]
async fn fewer_distinct_genomes_than_top_k_train_that_many_from_scratch() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let only_one = "[search]\narchitecture_mutation_probability = 0.0\n";
    let s = final_spec(8, "", "top_k = 3\nepochs = 4\nfrom = \"scratch\"", only_one);
    let id = within(h.sched.submit(s)).await.unwrap();
    let searched = run_search(&h.sched, &w, &id, spread).await;
    assert_eq!(searched, 5, "the search's share is max_trials - top_k");
    let all = trials(&h.sched, &id).await;
    let fin = finals(&all);
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0].parent_id.as_ref(), expected_parents(&all, 1).first());
    assert_eq!(fin[0].inherit_from, None);
    assert!(
        fin[0].origin.ends_with("for 4 epochs from scratch"),
        "{}",
        fin[0].origin
    );
    let reason = view(&h.sched, &id).await.row.status_reason;
    assert!(
        reason.contains("1 of top_k = 3 architectures (only 1 distinct architecture completed"),
        "{reason}"
    );
    let t = lease(&h.sched, &w).await;
    complete_full(&h.sched, &w, &t, 0.7).await;
    let v = view(&h.sched, &id).await;
    assert_eq!(
        v.row.status,
        ExperimentStatus::Completed,
        "{}",
        v.row.status_reason
    );
    assert_eq!(v.counts.finished(), 6);
}

#[tokio::test]
async fn a_restart_midway_through_the_final_phase_neither_loses_nor_doubles_a_trial() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(LONG_LEASE, 3);
    let (id, w, done, held, queued) = {
        let sched = open_scheduler(dir.path(), cfg.clone()).await;
        let w = register(&sched, 1).await;
        let s = final_spec(12, "max_epochs = 50\n", "top_k = 3\nepochs = 6", "");
        let id = within(sched.submit(s)).await.unwrap();
        run_search(&sched, &w, &id, spread).await;
        let fin = finals(&trials(&sched, &id).await);
        assert_eq!(fin.len(), 3);
        let first = lease(&sched, &w).await;
        complete_full(&sched, &w, &first, 0.7).await;
        let held = lease(&sched, &w).await;
        assert_eq!(
            report_epoch(&sched, &w, &held, 2, 0.6).await,
            HeartbeatAnswer::Continue
        );
        sched.store().close().await;
        (id, w, first.id, held, fin[2].id.clone())
    };

    let sched = open_scheduler(dir.path(), cfg).await;
    within(sched.resume()).await.unwrap();
    within(sched.tick()).await.unwrap();
    let before: Vec<(TrialId, TrialStatus)> = finals(&trials(&sched, &id).await)
        .into_iter()
        .map(|t| (t.id, t.status))
        .collect();
    assert_eq!(
        before,
        vec![
            (done.clone(), TrialStatus::Completed),
            (held.id.clone(), TrialStatus::Running),
            (queued.clone(), TrialStatus::Queued),
        ]
    );
    let v = view(&sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Running);
    assert!(
        v.row.status_reason.contains("1 of 3 ended"),
        "{}",
        v.row.status_reason
    );
    // The worker outlived the master: its final trial completes, and the queued one follows.
    complete_full(&sched, &w, &held, 0.8).await;
    let last = lease(&sched, &w).await;
    assert_eq!(last.id, queued);
    complete_full(&sched, &w, &last, 0.75).await;
    let v = view(&sched, &id).await;
    assert_eq!(
        v.row.status,
        ExperimentStatus::Completed,
        "{}",
        v.row.status_reason
    );
    let all = trials(&sched, &id).await;
    let fin = finals(&all);
    assert_eq!(fin.len(), 3);
    assert!(fin
        .iter()
        .all(|t| t.status == TrialStatus::Completed && t.attempt == 1));
    let parents: HashSet<_> = fin.iter().map(|t| t.parent_id.clone()).collect();
    assert_eq!(parents.len(), 3);
    assert!(v.epochs.committed <= 50, "{:?}", v.epochs);
    assert_eq!(fin.iter().map(|t| t.epoch).sum::<i64>(), 18);
    assert!(v.counts.budgeted() <= 12);
}

#[tokio::test]
async fn a_stopped_final_phase_proposes_nothing_and_resumes_each_cancelled_trial_once() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(
        h.sched
            .submit(final_spec(9, "", "top_k = 2\nepochs = 5", "")),
    )
    .await
    .unwrap();
    run_search(&h.sched, &w, &id, spread).await;
    let planned = finals(&trials(&h.sched, &id).await);
    assert_eq!(planned.len(), 2);
    let held = lease(&h.sched, &w).await;
    assert!(held.is_final());
    let outcome = within(h.sched.stop_experiment(id.as_str(), true))
        .await
        .unwrap();
    assert_eq!((outcome.cancelled_queued, outcome.cancelled_held), (1, 1));
    within(h.sched.tick()).await.unwrap();
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.lifecycle().as_str(), "stopped");
    assert_eq!((v.counts.queued, v.counts.in_flight()), (0, 0));
    assert_eq!(
        finals(&trials(&h.sched, &id).await).len(),
        2,
        "proposed while stopped"
    );

    within(h.sched.resume_experiment(id.as_str()))
        .await
        .unwrap();
    within(h.sched.tick()).await.unwrap();
    let all = trials(&h.sched, &id).await;
    let fin = finals(&all);
    assert_eq!(fin.len(), 4, "one new trial per cancelled one");
    let requeued: Vec<&TrialRow> = fin
        .iter()
        .filter(|t| t.status == TrialStatus::Queued)
        .collect();
    assert_eq!(requeued.len(), 2);
    let parents = |ts: &[&TrialRow]| -> Vec<Option<TrialId>> {
        ts.iter().map(|t| t.parent_id.clone()).collect()
    };
    assert_eq!(
        parents(&requeued),
        parents(&planned.iter().collect::<Vec<_>>())
    );
    for _ in 0..2 {
        let t = lease(&h.sched, &w).await;
        complete_full(&h.sched, &w, &t, 0.7).await;
    }
    let v = view(&h.sched, &id).await;
    assert_eq!(
        v.row.status,
        ExperimentStatus::Completed,
        "{}",
        v.row.status_reason
    );
    let fin = finals(&trials(&h.sched, &id).await);
    assert_eq!(
        fin.iter()
            .filter(|t| t.status == TrialStatus::Completed)
            .count(),
        2
    );
    assert_eq!(
        fin.iter()
            .filter(|t| t.status == TrialStatus::Cancelled)
            .count(),
        2
    );
}

#[tokio::test]
async fn a_final_trial_is_retried_by_the_lease_rules_and_one_that_fails_does_not_block_completion()
{
    let lease_period = Duration::from_secs(1);
    let h = Harness::new(config(lease_period, 3)).await;
    let w = register(&h.sched, 1).await;
    let id = within(
        h.sched
            .submit(final_spec(8, "", "top_k = 2\nepochs = 3", "")),
    )
    .await
    .unwrap();
    run_search(&h.sched, &w, &id, spread).await;
    let fin = finals(&trials(&h.sched, &id).await);
    assert_eq!(fin.len(), 2);
    // A lost lease: the same final trial comes back as attempt 2, not a new trial.
    let lost = lease(&h.sched, &w).await;
    assert_eq!(lost.id, fin[0].id);
    tokio::time::sleep(lease_period * 2).await;
    within(h.sched.tick()).await.unwrap();
    assert_eq!(
        (
            trial(&h.sched, &lost.id).await.status.as_str(),
            trial(&h.sched, &lost.id).await.attempt
        ),
        ("queued", 2)
    );
    let retry = lease(&h.sched, &w).await;
    assert_eq!((retry.id.as_str(), retry.attempt), (lost.id.as_str(), 2));
    within(
        h.sched
            .fail(w.as_str(), retry.id.as_str(), 2, "out of memory"),
    )
    .await
    .unwrap();
    assert_eq!(
        view(&h.sched, &id).await.row.status,
        ExperimentStatus::Running
    );
    let other = lease(&h.sched, &w).await;
    assert_eq!(other.id, fin[1].id);
    complete_full(&h.sched, &w, &other, 0.7).await;
    let v = view(&h.sched, &id).await;
    assert_eq!(
        v.row.status,
        ExperimentStatus::Completed,
        "{}",
        v.row.status_reason
    );
    assert!(
        v.row.status_reason.contains("(1 completed, 1 failed)"),
        "{}",
        v.row.status_reason
    );
    assert_eq!(finals(&trials(&h.sched, &id).await).len(), 2);
}

#[tokio::test]
async fn the_wall_time_budget_ends_the_search_and_the_final_phase_still_runs() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let s = final_spec(50, "max_wall_seconds = 1\n", "top_k = 1\nepochs = 4", "");
    let id = within(h.sched.submit(s)).await.unwrap();
    let t = lease(&h.sched, &w).await;
    complete_full(&h.sched, &w, &t, 0.7).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The trial queued meanwhile is cancelled; the final phase begins.
    within(h.sched.tick()).await.unwrap();
    let v = view(&h.sched, &id).await;
    assert!(v.row.in_final_phase(), "{}", v.row.status_reason);
    assert!(v
        .row
        .status_reason
        .ends_with("search ended: wall-time budget reached"));
    // A prefetched final trial is not cancelled for the spent wall time.
    let f = lease(&h.sched, &w).await;
    assert!(f.is_final());
    assert_eq!(f.parent_id.as_ref(), Some(&t.id));
    assert_eq!(
        within(h.sched.heartbeat(w.as_str(), f.id.as_str(), 1, progress(0)))
            .await
            .unwrap(),
        HeartbeatAnswer::Continue
    );
    complete_full(&h.sched, &w, &f, 0.8).await;
    let v = view(&h.sched, &id).await;
    assert_eq!(
        v.row.status,
        ExperimentStatus::Completed,
        "{}",
        v.row.status_reason
    );
    assert_eq!(v.row.best_trial_id.as_ref(), Some(&f.id));
}

/// Completes a held trial as a worker that measured its training: `seconds` for all its
/// planned epochs on `examples` of a `split`-example training split.
async fn complete_measured(
    sched: &Scheduler,
    w: &WorkerId,
    t: &TrialRow,
    seconds: f64,
    (examples, split): (f64, f64),
) {
    let r = TrialResult {
        metrics: BTreeMap::from([
            ("train_seconds".to_string(), seconds),
            ("eval_seconds".to_string(), 0.0),
            ("train_examples".to_string(), examples),
            ("split_examples".to_string(), split),
        ]),
        epochs_run: planned_epochs(t),
        ..result(0.7)
    };
    let answer = within(sched.complete(w.as_str(), t.id.as_str(), t.attempt as u32, r))
        .await
        .unwrap();
    assert_eq!(answer.reason, "", "{answer:?}");
}

#[tokio::test]
async fn within_the_wall_budget_the_search_keeps_half_and_the_final_epochs_fit_the_rest() {
    // A 4 s budget; the first trial trained at 0.8 s an epoch on the whole split, so the final
    // phase (4 epochs, 3.2 s) and one more search trial take the whole budget: the search
    // still keeps its half (2 s), then the final trial trains the epochs that fit the ~1.9 s
    // left (2).
    let measured = |fin: &str| final_spec(50, "max_wall_seconds = 4\n", fin, "");
    let within_budget = "top_k = 1\nepochs = 4\nwithin_wall_budget = true";
    let search_only = "top_k = 1\nepochs = 4";
    let (h, plain) = (Harness::long().await, Harness::long().await);
    let (w, pw) = (register(&h.sched, 1).await, register(&plain.sched, 1).await);
    let id = within(h.sched.submit(measured(within_budget)))
        .await
        .unwrap();
    let plain_id = within(plain.sched.submit(measured(search_only)))
        .await
        .unwrap();
    let t = lease(&h.sched, &w).await;
    let seconds = 0.8 * f64::from(planned_epochs(&t));
    complete_measured(&h.sched, &w, &t, seconds, (1000.0, 1000.0)).await;
    let pt = lease(&plain.sched, &pw).await;
    complete_measured(&plain.sched, &pw, &pt, seconds, (1000.0, 1000.0)).await;
    within(h.sched.tick()).await.unwrap();
    let v = view(&h.sched, &id).await;
    assert!(
        !v.row.in_final_phase(),
        "the search keeps half: {}",
        v.row.status_reason
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    within(h.sched.tick()).await.unwrap();
    within(plain.sched.tick()).await.unwrap();
    let v = view(&h.sched, &id).await;
    assert!(v.row.in_final_phase(), "{}", v.row.status_reason);
    let reason = &v.row.status_reason;
    assert!(
        reason.contains("search ended: wall-time budget reached (")
            && reason.contains(" of 4 kept for the final phase")
            && reason.contains("(of final.epochs = 4: what the wall-time budget left)"),
        "{reason}"
    );
    let f = lease(&h.sched, &w).await;
    assert!(f.is_final());
    assert_eq!(f.parent_id.as_ref(), Some(&t.id));
    let epochs = planned_epochs(&f);
    assert!(
        (1..4).contains(&epochs),
        "{epochs} epochs fit the ~1.9 s left"
    );
    assert!(
        f.origin.contains(&format!("for {epochs} epochs")),
        "{}",
        f.origin
    );
    complete_full(&h.sched, &w, &f, 0.8).await;
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Completed);
    assert!(
        v.row
            .status_reason
            .starts_with(&format!("final training done: 1 architecture retrained for {epochs} epochs (of final.epochs = 4")),
        "{}",
        v.row.status_reason
    );

    // The same search with the wall budget for the search alone goes on.
    let v = view(&plain.sched, &plain_id).await;
    assert!(!v.row.in_final_phase(), "{}", v.row.status_reason);
}

#[tokio::test]
async fn within_the_wall_budget_a_fast_search_keeps_searching() {
    // 1 s of training per trial: a final trial of 4 epochs is expected to take 20 s, far less
    // than the hour, so the search goes on.
    let within_budget = "top_k = 1\nepochs = 4\nwithin_wall_budget = true";
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(final_spec(
        50,
        "max_wall_seconds = 3600\n",
        within_budget,
        "",
    )))
    .await
    .unwrap();
    for _ in 0..3 {
        let t = lease(&h.sched, &w).await;
        complete_measured(&h.sched, &w, &t, 1.0, (1000.0, 1000.0)).await;
    }
    within(h.sched.tick()).await.unwrap();
    let v = view(&h.sched, &id).await;
    assert!(!v.row.in_final_phase(), "{}", v.row.status_reason);
    assert_eq!(v.row.status, ExperimentStatus::Running);
}

#[tokio::test]
async fn without_a_final_section_the_experiment_ends_with_its_search() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(4, ""))).await.unwrap();
    assert_eq!(run_search(&h.sched, &w, &id, spread).await, 4);
    let v = view(&h.sched, &id).await;
    assert_eq!(
        (v.row.status.as_str(), v.row.status_reason.as_str()),
        ("completed", "trial budget reached")
    );
    assert!(!v.row.in_final_phase());
    assert!(finals(&trials(&h.sched, &id).await).is_empty());
}

#[tokio::test]
async fn with_a_search_subset_search_trials_train_on_it_and_final_trials_on_everything() {
    use crate::service::convert::trial_assignment;
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let s = final_spec(
        5,
        "",
        "top_k = 1\nepochs = 3\nsearch_subset = 500",
        TWO_GENOMES,
    );
    let id = within(h.sched.submit(s.clone())).await.unwrap();
    let spec = view(&h.sched, &id).await.spec;
    let searched = run_search(&h.sched, &w, &id, spread).await;
    assert!(searched > 0);
    let all = trials(&h.sched, &id).await;
    for t in all.iter().filter(|t| !t.is_final()) {
        assert_eq!(
            trial_assignment(t, &spec).train_examples,
            500,
            "{}",
            t.origin
        );
    }
    let fin = finals(&all);
    assert_eq!(fin.len(), 1);
    let held = lease(&h.sched, &w).await;
    assert_eq!(held.id, fin[0].id);
    assert_eq!(
        trial_assignment(&held, &spec).train_examples,
        0,
        "all of the split"
    );
    // Without the key, every trial trains on the whole split.
    let plain = final_spec(5, "", "top_k = 1\nepochs = 3", TWO_GENOMES);
    let id = within(h.sched.submit(plain)).await.unwrap();
    let spec = view(&h.sched, &id).await.spec;
    let t = lease(&h.sched, &w).await;
    assert_eq!(t.experiment_id, id);
    assert_eq!(trial_assignment(&t, &spec).train_examples, 0);
}

// ---- random operation orders, with restarts -----------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Lease a trial if one is available.
    Acquire,
    /// Complete the n-th held trial with a score.
    Complete(usize, f64),
    /// Fail the n-th held trial.
    Fail(usize),
    /// Close the store and open a new scheduler on the same directory.
    Restart,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => Just(Op::Acquire),
        4 => (any::<usize>(), 0.0f64..=1.0).prop_map(|(n, s)| Op::Complete(n, s)),
        1 => any::<usize>().prop_map(Op::Fail),
        1 => Just(Op::Restart),
    ]
}

/// What must hold after every operation: the totals stay inside the budget, no final trial is
/// doubled, the plan is the best distinct genomes of the (frozen) search, and a completed
/// experiment has ended every final trial of its plan.
async fn check_final_invariants(
    sched: &Scheduler,
    id: &ExperimentId,
    max_trials: u32,
    top_k: usize,
    completions: &[TrialId],
) {
    let v = view(sched, id).await;
    assert!(v.counts.budgeted() <= max_trials, "{:?}", v.counts);
    assert_eq!(
        v.counts.completed as usize,
        completions.len(),
        "each trial completes once"
    );
    let all = trials(sched, id).await;
    let live: Vec<&TrialRow> = all
        .iter()
        .filter(|t| t.is_final() && t.status != TrialStatus::Cancelled)
        .collect();
    let parents: Vec<TrialId> = live.iter().map(|t| t.parent_id.clone().unwrap()).collect();
    let distinct: HashSet<&TrialId> = parents.iter().collect();
    assert_eq!(
        distinct.len(),
        parents.len(),
        "a final trial doubled: {parents:?}"
    );
    assert!(parents.len() <= top_k);
    if v.row.in_final_phase() {
        assert_eq!(parents, expected_parents(&all, top_k));
        assert!(all
            .iter()
            .filter(|t| !t.is_final())
            .all(|t| !matches!(t.status.as_str(), "queued" | "leased" | "running")));
    } else {
        assert!(parents.is_empty());
    }
    if v.row.status == ExperimentStatus::Completed {
        assert!(live
            .iter()
            .all(|t| matches!(t.status.as_str(), "completed" | "failed")));
        assert_eq!(parents, expected_parents(&all, top_k));
    }
}

async fn run_final_ops(max_trials: u32, top_k: u32, slots: u32, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(LONG_LEASE, 3);
    let mut sched = open_scheduler(dir.path(), cfg.clone()).await;
    let w = register(&sched, slots).await;
    let fin = format!("top_k = {top_k}\nepochs = 4");
    let id = within(sched.submit(final_spec(max_trials, "", &fin, "")))
        .await
        .unwrap();
    let mut held: Vec<TrialRow> = Vec::new();
    let mut completions: Vec<TrialId> = Vec::new();
    let top_k = top_k as usize;
    for op in ops {
        match op {
            Op::Acquire => {
                if let Some(t) = within(sched.acquire(w.as_str(), Duration::ZERO))
                    .await
                    .unwrap()
                {
                    assert!(held.iter().all(|h| h.id != t.id), "leased twice");
                    held.push(t);
                }
            }
            Op::Complete(n, score) if !held.is_empty() => {
                let t = held.remove(n % held.len());
                complete_full(&sched, &w, &t, score).await;
                completions.push(t.id.clone());
            }
            Op::Fail(n) if !held.is_empty() => {
                let t = held.remove(n % held.len());
                within(sched.fail(
                    w.as_str(),
                    t.id.as_str(),
                    t.attempt as u32,
                    "random failure",
                ))
                .await
                .unwrap();
            }
            Op::Restart => {
                sched.store().close().await;
                sched = open_scheduler(dir.path(), cfg.clone()).await;
                within(sched.resume()).await.unwrap();
                within(sched.tick()).await.unwrap();
            }
            _ => {}
        }
        check_final_invariants(&sched, &id, max_trials, top_k, &completions).await;
    }
    // Whatever happened so far, the experiment can still be finished.
    let mut rounds = 0;
    while view(&sched, &id).await.row.status == ExperimentStatus::Running {
        rounds += 1;
        assert!(rounds < 100, "experiment does not end");
        for t in std::mem::take(&mut held) {
            complete_full(&sched, &w, &t, 0.5).await;
            completions.push(t.id.clone());
        }
        while let Some(t) = within(sched.acquire(w.as_str(), Duration::ZERO))
            .await
            .unwrap()
        {
            held.push(t);
        }
        check_final_invariants(&sched, &id, max_trials, top_k, &completions).await;
    }
    let v = view(&sched, &id).await;
    let all = trials(&sched, &id).await;
    if v.row.status == ExperimentStatus::Completed {
        let distinct: HashSet<&str> = all
            .iter()
            .filter(|t| !t.is_final() && t.status == TrialStatus::Completed)
            .map(|t| t.genome_hash.as_str())
            .collect();
        let live = all
            .iter()
            .filter(|t| t.is_final() && t.status != TrialStatus::Cancelled)
            .count();
        assert_eq!(live, top_k.min(distinct.len()), "{}", v.row.status_reason);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

    #[test]
    fn final_phase_invariants_hold_in_any_order_and_across_restarts(
        max_trials in 3u32..=7,
        top_k in 1u32..=2,
        slots in 1u32..=3,
        ops in proptest::collection::vec(op(), 0..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_final_ops(max_trials, top_k, slots, ops));
    }
}
