//! The master's command lines in deploy/ (the Kubernetes base and the Dockerfile) are parsed by
//! the master's own CLI, so they can never drift from it. Overlays may not change a command line:
//! they would escape this test (the worker's side is `worker/src/deploy_manifest_tests.rs`). An
//! overlay may set the master's environment (the `postgres` overlay's `EXPLORE_DB`, which is
//! `--db`, and the `postgres-object-storage` overlay's `EXPLORE_ARTIFACTS`, which is `--artifacts`):
//! that is checked against the CLI here too.

#[path = "../../tests/src/manifest.rs"]
mod manifest;

use clap::{CommandFactory, Parser};
use explore_master::cli::{Cli, Command};
use explore_master::server::ServeConfig;
use explore_master::store::Store;
use manifest::{container_argv, dockerfile_argv, read_repo_file, repo_root};

/// Parses `argv` as `master` would and checks it is a valid `master serve`.
fn parse_serve(argv: &[String], origin: &str) -> ServeConfig {
    assert_eq!(
        argv.first().map(String::as_str),
        Some("master"),
        "{origin}: {argv:?}"
    );
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{origin}: {argv:?}\n{e}"));
    let Command::Serve(args) = cli.command else {
        panic!("{origin}: not `master serve`: {argv:?}");
    };
    ServeConfig::try_from(&args).unwrap_or_else(|e| panic!("{origin}: {argv:?}: {e:#}"))
}

#[test]
fn the_kubernetes_master_command_line_is_a_valid_master_serve() {
    let yaml = read_repo_file("deploy/k8s/base/master.yaml");
    let argv = container_argv(&yaml, "master").unwrap();
    let config = parse_serve(&argv, "deploy/k8s/base/master.yaml");
    // What the rest of the manifests rely on: the Service's ports, the PVC and Secret mounts.
    assert_eq!(config.listen.port(), 50051);
    assert!(config.listen.ip().is_unspecified(), "{argv:?}");
    assert_eq!(config.http_listen.map(|a| a.port()), Some(8080));
    assert_eq!(config.data_dir, std::path::Path::new("/data"));
    assert_eq!(
        config.token_file.as_deref(),
        Some(std::path::Path::new("/etc/explore/token"))
    );
    for probe in ["path: /healthz", "path: /readyz", "mountPath: /etc/explore"] {
        assert!(yaml.contains(probe), "master.yaml lacks {probe}");
    }
}

#[test]
fn the_master_image_s_default_command_is_a_valid_master_serve() {
    let argv = dockerfile_argv(&read_repo_file("deploy/Dockerfile.master")).unwrap();
    let config = parse_serve(&argv, "deploy/Dockerfile.master");
    assert_eq!(config.data_dir, std::path::Path::new("/data"));
}

#[test]
fn overlays_do_not_change_command_lines() {
    let overlays = repo_root().join("deploy/k8s/overlays");
    let mut seen = 0;
    for overlay in std::fs::read_dir(&overlays).unwrap() {
        for file in std::fs::read_dir(overlay.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let key = line.trim_start().trim_start_matches("- ");
                assert!(
                    !["command:", "args:", "image:"]
                        .iter()
                        .any(|k| key.starts_with(k)),
                    "{}: overlays must not change command lines (tested in the base only): {line}",
                    path.display()
                );
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no overlay files under {}", overlays.display());
}

/// The `env` list of the container named `container` in a manifest (the block style the
/// manifests use): each variable's name and the trimmed lines of its value, e.g.
/// `("EXPLORE_DB", ["valueFrom:", "secretKeyRef:", "name: explore-db", "key: url"])`.
fn container_env(yaml: &str, container: &str) -> Vec<(String, Vec<String>)> {
    let content = |l: &&str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = yaml.lines().filter(content).collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start() == format!("- name: {container}"))
        .unwrap_or_else(|| panic!("no container named {container}"));
    let dash = indent(lines[start]);
    let body: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|l| indent(l) > dash)
        .copied()
        .collect();
    let Some(at) = body
        .iter()
        .position(|l| indent(l) == dash + 2 && l.trim_start() == "env:")
    else {
        return Vec::new();
    };
    let mut env: Vec<(String, Vec<String>)> = Vec::new();
    for l in body[at + 1..].iter().take_while(|l| indent(l) > dash + 2) {
        let item = l.trim_start();
        match item.strip_prefix("- name: ") {
            Some(name) => env.push((name.trim().to_string(), Vec::new())),
            None => env
                .last_mut()
                .unwrap_or_else(|| panic!("env: cannot read {l:?}"))
                .1
                .push(item.to_string()),
        }
    }
    env
}

#[test]
fn the_postgres_overlay_s_master_is_a_valid_master_serve_on_postgresql() {
    let base = read_repo_file("deploy/k8s/base/master.yaml");
    let argv = container_argv(&base, "master").unwrap();
    // The base's command line has no --db: it would override EXPLORE_DB.
    assert!(
        !argv.iter().any(|a| a == "--db" || a.starts_with("--db=")),
        "deploy/k8s/base/master.yaml: {argv:?}"
    );

    // The overlay sets EXPLORE_DB, and nothing else, from the Secret explore-db (key url).
    let origin = "deploy/k8s/overlays/postgres/master-postgres.yaml";
    let overlay = read_repo_file(origin);
    assert_eq!(
        container_env(&overlay, "master"),
        [(
            "EXPLORE_DB".to_string(),
            [
                "valueFrom:",
                "secretKeyRef:",
                "name: explore-db",
                "key: url"
            ]
            .map(String::from)
            .to_vec()
        )],
        "{origin}: the master's env"
    );
    for needed in [
        "replicas: 2",
        "mountPath: /data",
        "claimName: explore-artifacts",
    ] {
        assert!(overlay.contains(needed), "{origin} lacks {needed}");
    }

    // The CLI reads `master serve --db` from EXPLORE_DB ...
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("master serve");
    let db = serve
        .get_arguments()
        .find(|a| a.get_long() == Some("db"))
        .expect("master serve --db");
    assert_eq!(
        db.get_env().and_then(|e| e.to_str()),
        Some("EXPLORE_DB"),
        "`master serve --db` must read EXPLORE_DB, which {origin} sets"
    );
    // ... so the pod runs the base's command line with the Secret's URL as --db (given here as
    // the flag: the test does not change its own process's environment).
    let url = "postgres://explore:secret@postgres.example:5432/explore?sslmode=require";
    let mut with_db = argv.clone();
    with_db.extend(["--db".to_string(), url.to_string()]);
    let config = parse_serve(&with_db, origin);
    assert_eq!(config.db, url);
    assert!(
        !Store::is_sqlite(&config.db),
        "{url} is not PostgreSQL mode"
    );
    assert_eq!(config.data_dir, std::path::Path::new("/data"));
    assert_eq!(config.http_listen.map(|a| a.port()), Some(8080));
    assert_eq!(
        config.token_file.as_deref(),
        Some(std::path::Path::new("/etc/explore/token"))
    );

    // The sqlite overlay leaves EXPLORE_DB unset: `--db` keeps its default, `sqlite`.
    let sqlite = read_repo_file("deploy/k8s/overlays/sqlite/master-data.yaml");
    assert_eq!(container_env(&sqlite, "master"), []);
    assert_eq!(db.get_default_values(), ["sqlite"]);
}

#[test]
fn the_object_storage_overlay_s_master_keeps_checkpoints_in_a_bucket() {
    let origin = "deploy/k8s/overlays/postgres-object-storage/master-object-storage.yaml";
    let overlay = read_repo_file(origin);
    let env = container_env(&overlay, "master");
    let [(name, value)] = env.as_slice() else {
        panic!("{origin}: the master's env is EXPLORE_ARTIFACTS only: {env:?}");
    };
    assert_eq!(name, "EXPLORE_ARTIFACTS", "{origin}");
    let url = value
        .first()
        .and_then(|v| v.strip_prefix("value: "))
        .unwrap_or_else(|| panic!("{origin}: EXPLORE_ARTIFACTS has no plain value: {value:?}"));
    assert!(
        matches!(
            explore_master::artifacts::ArtifactLocation::parse(url),
            Ok(explore_master::artifacts::ArtifactLocation::Url(_))
        ),
        "{origin}: {url} is not an object-storage URL"
    );
    for needed in [
        "name: explore-object-storage",
        "optional: true",
        "persistentVolumeClaim: null",
        "emptyDir:",
    ] {
        assert!(overlay.contains(needed), "{origin} lacks {needed}");
    }
    let drop =
        read_repo_file("deploy/k8s/overlays/postgres-object-storage/drop-artifacts-pvc.yaml");
    assert!(drop.contains("$patch: delete") && drop.contains("name: explore-artifacts"));

    // `master serve --artifacts` reads EXPLORE_ARTIFACTS, and the base's command line with it is a
    // valid master serve keeping checkpoints there (given as the flag, as above).
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("master serve");
    let flag = serve
        .get_arguments()
        .find(|a| a.get_long() == Some("artifacts"))
        .expect("master serve --artifacts");
    assert_eq!(
        flag.get_env().and_then(|e| e.to_str()),
        Some("EXPLORE_ARTIFACTS")
    );
    let mut argv =
        container_argv(&read_repo_file("deploy/k8s/base/master.yaml"), "master").unwrap();
    assert!(
        !argv.iter().any(|a| a.starts_with("--artifacts")),
        "{argv:?}"
    );
    argv.extend(["--artifacts".to_string(), url.to_string()]);
    let config = parse_serve(&argv, origin);
    assert_eq!(
        config.artifacts_location().to_string(),
        url,
        "{origin}: the checkpoints' location"
    );
}
