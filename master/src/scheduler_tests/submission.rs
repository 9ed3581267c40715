//! Submission and queueing: seeds, genome and spec files, the queue target, experiment views.

use super::*;

// Regression: the stored spec had every seed inlined as a bare genome, so seed trials were
// labelled "seed #0" instead of by their preset ("seed cnn2").
#[tokio::test]
async fn submit_queues_the_seed_first() {
    let h = Harness::long().await;
    let id = within(h.sched.submit(spec(4, ""))).await.unwrap();
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Running);
    assert_eq!(v.row.name, "test");
    assert_eq!(v.spec.budget.max_trials, 4);
    assert!(v.best.is_none());
    assert_eq!(v.temperature, v.spec.annealing.initial_temperature);
    let all = trials(&h.sched, &id).await;
    assert_eq!(all.len(), 1, "no worker yet: one trial queued");
    let seed = &all[0];
    assert_eq!(seed.seq, 0);
    assert_eq!(seed.status, TrialStatus::Queued);
    assert_eq!(seed.attempt, 1);
    assert_eq!(seed.parent_id, None);
    assert_eq!(seed.origin, "seed cnn2");
    let cnn2 = explore_common::presets::preset("cnn2").unwrap();
    assert_eq!(seed.genome_json, cnn2.canonical_json());
    assert_eq!(seed.genome_hash, cnn2.canonical_hash());
    assert_eq!(seed.hparams_json, HyperParams::default().to_json());
    assert_eq!(seed.params as u64, cnn2.analyze().unwrap().params);
}

#[tokio::test]
async fn every_seed_is_trained_before_any_mutation() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let extra = "[[seeds]]\npreset = \"mlp\"\n[[seeds]]\npreset = \"cnn3\"\n\
                 [seeds.hparams]\noptimizer = \"sgd\"\nlearning_rate = 0.01\nschedule = \"cosine\"\n\
                 batch_size = 64\nweight_decay = 0.0\nepochs = 2\n";
    let id = within(h.sched.submit(spec(5, extra))).await.unwrap();
    let first = lease(&h.sched, &w).await;
    finish(&h.sched, &w, &first, 0.8).await;
    let second = lease(&h.sched, &w).await;
    finish(&h.sched, &w, &second, 0.85).await;
    let third = lease(&h.sched, &w).await;
    assert_eq!((first.seq, first.origin.as_str()), (0, "seed mlp"));
    assert_eq!((second.seq, second.origin.as_str()), (1, "seed cnn3"));
    assert_eq!(first.parent_id, None);
    assert_eq!(second.parent_id, None);
    assert!(HyperParams::from_json(&second.hparams_json).unwrap().epochs == 2);
    assert_eq!(third.seq, 2);
    let parent = third.parent_id.clone().expect("mutations have a parent");
    assert!(
        parent == first.id || parent == second.id,
        "parent {parent} is not a seed"
    );
    assert!(!third.origin.starts_with("seed"), "{}", third.origin);
    assert_eq!(counts(&h.sched, &id).await.completed, 2);
}

#[tokio::test]
async fn genome_file_seeds_are_inlined_at_submission() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let file = h.dir.path().join("seed.json");
    let genome = explore_common::presets::preset("mlp").unwrap();
    std::fs::write(&file, genome.canonical_json()).unwrap();
    let extra = format!(
        "[[seeds]]\ngenome_file = {:?}\n",
        file.display().to_string()
    );
    let id = within(h.sched.submit(spec(3, &extra))).await.unwrap();
    // The master never reads the file again.
    std::fs::remove_file(&file).unwrap();
    let stored = within(h.sched.spec_of(id.as_str())).await.unwrap();
    assert_eq!(stored.seeds[0].genome_file, None);
    assert_eq!(stored.seeds[0].genome.as_ref(), Some(&genome));
    let seed = lease(&h.sched, &w).await;
    assert_eq!(seed.genome_hash, genome.canonical_hash());
    finish(&h.sched, &w, &seed, 0.5).await;
    let child = lease(&h.sched, &w).await;
    assert_eq!(child.parent_id.as_ref(), Some(&seed.id));
}

/// Writes `mlp` as a genome file and a spec next to it naming it as `genome_file`.
fn spec_file_with_genome_file(dir: &std::path::Path, genome_file: &str) -> std::path::PathBuf {
    let genome = explore_common::presets::preset("mlp").unwrap();
    std::fs::write(dir.join("mine.json"), genome.canonical_json()).unwrap();
    let spec_path = dir.join("spec.toml");
    std::fs::write(
        &spec_path,
        format!(
            "name = \"cli\"\n[budget]\nmax_trials = 3\n\
             [[seeds]]\npreset = \"cnn2\"\n[[seeds]]\ngenome_file = {genome_file:?}\n"
        ),
    )
    .unwrap();
    spec_path
}

// Regression: `master submit` inlined every seed as a bare genome as soon as one seed named a
// genome file, so preset seeds lost their name ("seed #0" instead of "seed cnn2").
#[tokio::test]
async fn submitted_spec_file_keeps_preset_seeds_by_name() {
    let h = Harness::long().await;
    let w = register(&h.sched, 2).await;
    let absolute = h.dir.path().join("mine.json").display().to_string();
    let spec_path = spec_file_with_genome_file(h.dir.path(), &absolute);
    let text = crate::cli::prepare_spec(&spec_path).unwrap();
    assert!(!text.contains("mine.json"), "{text}");
    let id = within(h.sched.submit(ExperimentSpec::from_toml(&text).unwrap()))
        .await
        .unwrap();
    let first = lease(&h.sched, &w).await;
    let second = lease(&h.sched, &w).await;
    assert_eq!(first.origin, "seed cnn2");
    assert_eq!(second.origin, "seed #1");
    let mlp = explore_common::presets::preset("mlp").unwrap();
    assert_eq!(second.genome_hash, mlp.canonical_hash());
    assert_eq!(counts(&h.sched, &id).await.leased, 2);
}

// Regression: `prepare_spec` validated the spec before resolving genome files against the spec's
// directory, and validation resolves them against the current directory: a spec naming
// `genome_file = "mine.json"` next to it was refused unless submitted from its own directory.
#[test]
fn spec_file_resolves_genome_files_next_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_file_with_genome_file(dir.path(), "mine.json");
    assert!(
        !std::path::Path::new("mine.json").exists(),
        "test needs another working directory"
    );
    let text = crate::cli::prepare_spec(&spec_path).unwrap();
    let spec = ExperimentSpec::from_toml(&text).unwrap();
    let mlp = explore_common::presets::preset("mlp").unwrap();
    assert_eq!(spec.seeds[1].genome.as_ref(), Some(&mlp));
    assert_eq!(spec.seeds[1].genome_file, None);
    // Errors still name the key, and the file.
    let missing = spec_file_with_genome_file(dir.path(), "absent.json");
    let err = format!("{:#}", crate::cli::prepare_spec(&missing).unwrap_err());
    assert!(
        err.contains("seeds[1].genome_file") && err.contains("absent.json"),
        "{err}"
    );
    std::fs::write(&missing, "name = \"x\"\n[budget]\nmax_trials = 0\n").unwrap();
    let err = format!("{:#}", crate::cli::prepare_spec(&missing).unwrap_err());
    assert!(err.contains("budget.max_trials"), "{err}");
}

#[tokio::test]
async fn queue_target_follows_connected_slots_within_the_budget() {
    let h = Harness::long().await;
    register(&h.sched, 3).await;
    let wide = within(h.sched.submit(spec(10, ""))).await.unwrap();
    let all = trials(&h.sched, &wide).await;
    assert_eq!(all.len(), 3, "one queued trial per connected slot");
    assert!(all.iter().all(|t| t.status == TrialStatus::Queued));
    assert_eq!(all[0].parent_id, None);
    for t in &all[1..] {
        assert_eq!(
            t.parent_id.as_ref(),
            Some(&all[0].id),
            "only the seed can be mutated"
        );
    }

    register(&h.sched, 2).await;
    let tight = within(h.sched.submit(spec(2, ""))).await.unwrap();
    assert_eq!(
        counts(&h.sched, &tight).await.queued,
        2,
        "never more than max_trials"
    );
    // Topping up does not go past the budget either.
    within(h.sched.tick()).await.unwrap();
    assert_eq!(counts(&h.sched, &tight).await.queued, 2);
    assert_eq!(
        counts(&h.sched, &wide).await.queued,
        5,
        "five slots are connected now"
    );
}

#[tokio::test]
async fn invalid_spec_is_refused_and_nothing_is_recorded() {
    let h = Harness::long().await;
    let mut bad = spec(3, "");
    bad.budget.max_trials = 0;
    let err = within(h.sched.submit(bad)).await.unwrap_err();
    assert!(err.to_string().contains("budget.max_trials"), "{err}");
    assert_code::<()>(Err(err), tonic::Code::InvalidArgument);
    assert!(within(h.sched.experiment_views()).await.unwrap().is_empty());
}

#[tokio::test]
async fn seeds_that_do_not_take_the_data_s_images_are_refused_with_a_hint() {
    let h = Harness::long().await;
    // cnn2 takes 28x28 images; digits are 8x8 unless resized
    let err = within(h.sched.submit(spec(3, "[data]\ndataset = \"digits\"\n")))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("seed cnn2 takes 1x28x28") && text.contains("size = 28"),
        "{text}"
    );
    assert_code::<()>(Err(err), tonic::Code::InvalidArgument);
    assert!(within(h.sched.experiment_views()).await.unwrap().is_empty());
    // resized, the same seed is accepted
    within(
        h.sched
            .submit(spec(3, "[data]\ndataset = \"digits\"\nsize = 28\n")),
    )
    .await
    .unwrap();
    // RGB folders against a gray seed: no size hint helps
    let err = within(h.sched.submit(spec(
        3,
        "[data]\ndataset = \"folder\"\nfolder = \"/data\"\nchannels = 3\n",
    )))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("3x28x28") && !err.contains("size ="), "{err}");
}

#[tokio::test]
async fn unknown_experiment_is_not_found() {
    let h = Harness::long().await;
    assert_code(
        within(h.sched.experiment_view("exp-0000000000000000")).await,
        tonic::Code::NotFound,
    );
    assert_code(
        within(h.sched.trials("exp-0000000000000000")).await,
        tonic::Code::NotFound,
    );
    assert_code(
        within(h.sched.spec_of("exp-0000000000000000")).await,
        tonic::Code::NotFound,
    );
}

#[tokio::test]
async fn experiment_views_list_newest_first_with_the_stored_spec() {
    let h = Harness::long().await;
    let a = within(h.sched.submit(spec(2, ""))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = within(h.sched.submit(seeded_spec(3, 7))).await.unwrap();
    let views = within(h.sched.experiment_views()).await.unwrap();
    let ids: Vec<&str> = views.iter().map(|v| v.row.id.as_str()).collect();
    assert_eq!(ids, vec![b.as_str(), a.as_str()]);
    let stored = within(h.sched.spec_of(b.as_str())).await.unwrap();
    assert_eq!(stored.seed, 7);
    assert_eq!(stored.budget.max_trials, 3);
    stored
        .validate()
        .expect("the stored spec is valid on its own");
}
