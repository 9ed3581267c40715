//! Every spec in `examples/` parses and validates, so the README's commands never hand a user a
//! spec the master refuses.

use explore_common::spec::ExperimentSpec;

#[test]
fn every_example_spec_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let spec =
            ExperimentSpec::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        checked.push((path, spec));
    }
    let names: Vec<String> = checked
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "fashion-demo.toml",
        "fashion-cpu-hour.toml",
        "fashion-gpu-hour.toml",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    // The demo and the CPU-hour spec search on a subset and train the winners on everything.
    for (path, spec) in &checked {
        let name = path.file_name().unwrap().to_string_lossy();
        if name == "fashion-demo.toml" || name == "fashion-cpu-hour.toml" {
            let fin = spec.final_training.as_ref().expect("a [final] section");
            assert!(fin.search_subset > 0, "{name}");
        }
    }
}
