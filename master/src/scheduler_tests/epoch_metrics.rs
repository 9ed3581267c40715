//! Per-epoch metrics of the training objective: checked by name, count and value.

use super::*;
use std::collections::HashMap;

fn epoch_metrics(named: &[(&str, f64)]) -> BTreeMap<String, f64> {
    named.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn epoch_metrics_are_checked_by_name_count_and_value() {
    use crate::scheduler::validate_epoch_metrics;
    let refused = |m: BTreeMap<String, f64>| match validate_epoch_metrics(&m) {
        Err(MasterError::InvalidArgument(message)) => message,
        other => panic!("{m:?} was not refused: {other:?}"),
    };
    validate_epoch_metrics(&BTreeMap::new()).unwrap();
    validate_epoch_metrics(&epoch_metrics(&[
        ("elr.norm_drift", -0.5),
        ("a_1.b2", 0.0),
        (&"x".repeat(64), 1e300),
    ]))
    .unwrap();
    for bad in ["", "Upper", "with space", "dash-ed", "é", &"x".repeat(65)] {
        let message = refused(epoch_metrics(&[("ok", 1.0), (bad, 1.0)]));
        let shown: String = bad.chars().take(65).collect();
        assert!(message.contains(&format!("{shown:?}")), "{message}");
    }
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let message = refused(epoch_metrics(&[("elr.norm_drift", bad)]));
        assert!(message.contains("\"elr.norm_drift\""), "{message}");
    }
    let full: BTreeMap<String, f64> = (0..32).map(|i| (format!("m{i}"), 1.0)).collect();
    validate_epoch_metrics(&full).unwrap();
    let too_many: BTreeMap<String, f64> = (0..33).map(|i| (format!("m{i}"), 1.0)).collect();
    assert!(refused(too_many).contains("at most 32"));
}

#[tokio::test]
async fn a_heartbeat_with_a_bad_epoch_metric_is_refused_naming_it_and_records_nothing() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(4, ""))).await.unwrap();
    let t = lease(&h.sched, &w).await;
    let beat = |metrics: BTreeMap<String, f64>| Progress {
        started: true,
        epoch: 1,
        total_epochs: 3,
        train_loss: 0.4,
        val_accuracy: 0.7,
        metrics,
    };
    let curve = |sched: Arc<Scheduler>, trial_id: TrialId| async move {
        let mut conn = within(sched.store().conn()).await.unwrap();
        conn.epoch_curve(&trial_id).await.unwrap()
    };
    for (metrics, named) in [
        (
            epoch_metrics(&[("elr.norm_drift", 0.1), ("Norm-Drift", 0.2)]),
            "epoch metric \"Norm-Drift\"",
        ),
        (
            epoch_metrics(&[("elr.norm_drift", f64::NAN)]),
            "epoch metric \"elr.norm_drift\" = NaN",
        ),
    ] {
        let answer = within(
            h.sched
                .heartbeat(w.as_str(), t.id.as_str(), 1, beat(metrics)),
        )
        .await;
        match answer {
            Err(MasterError::InvalidArgument(message)) => {
                assert!(message.contains(named), "{message}")
            }
            other => panic!("not refused: {other:?}"),
        }
    }
    assert!(
        curve(h.sched.clone(), t.id.clone()).await.is_empty(),
        "a refused report records no epoch"
    );
    let after = trial(&h.sched, &t.id).await;
    assert_eq!(
        (after.status.as_str(), after.epoch, after.lease_deadline_ms),
        ("leased", 0, t.lease_deadline_ms),
        "nor progress, nor a longer lease"
    );

    // A good report is stored with its epoch and read back as the trial's last-epoch metrics.
    let good = epoch_metrics(&[("elr.norm_drift", 0.125)]);
    let answer = within(
        h.sched
            .heartbeat(w.as_str(), t.id.as_str(), 1, beat(good.clone())),
    )
    .await
    .unwrap();
    assert_eq!(answer, HeartbeatAnswer::Continue);
    let rows = curve(h.sched.clone(), t.id.clone()).await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].epoch, rows[0].val_accuracy), (1, 0.7));
    assert_eq!(rows[0].metrics(), good);
    let last = within(h.sched.last_epoch_metrics(id.as_str()))
        .await
        .unwrap();
    assert_eq!(last, HashMap::from([(t.id.clone(), good)]));
}
