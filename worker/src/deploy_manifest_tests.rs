//! The worker's command lines in deploy/ (the Kubernetes Job and the Dockerfile) are parsed by
//! the worker's own CLI (the private `Cli` of `main.rs`), so they can never drift from it.

#[path = "../../tests/src/manifest.rs"]
mod manifest;

use clap::Parser;

use super::{Cli, Command};
use manifest::{container_argv, dockerfile_argv, read_repo_file};

/// Parses `argv` as `worker` would and returns the `join` flags.
fn parse_join(argv: &[String], origin: &str) -> super::JoinArgs {
    assert_eq!(
        argv.first().map(String::as_str),
        Some("worker"),
        "{origin}: {argv:?}"
    );
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{origin}: {argv:?}\n{e}"));
    match cli.command {
        Command::Join(args) => args,
        other => panic!("{origin}: not `worker join`: {other:?}"),
    }
}

#[test]
fn the_kubernetes_worker_command_line_is_a_valid_worker_join() {
    let yaml = read_repo_file("deploy/k8s/base/workers.yaml");
    let argv = container_argv(&yaml, "worker").unwrap();
    let join = parse_join(&argv, "deploy/k8s/base/workers.yaml");
    // The master's Service and the token Secret's mount.
    assert_eq!(join.connection.master, ["http://explore-master:50051"]);
    assert_eq!(
        join.connection.token_file.as_deref(),
        Some(std::path::Path::new("/etc/explore/token"))
    );
    assert!(join.idle_exit_secs > 0, "the Job must be able to complete");
    for line in [
        "completionMode: Indexed",
        "nvidia.com/gpu: 1",
        "mountPath: /etc/explore",
    ] {
        assert!(yaml.contains(line), "workers.yaml lacks {line}");
    }
}

#[test]
fn the_worker_image_s_default_command_is_a_valid_worker_join() {
    let argv = dockerfile_argv(&read_repo_file("deploy/Dockerfile.worker")).unwrap();
    let join = parse_join(&argv, "deploy/Dockerfile.worker");
    assert_eq!(join.connection.master, ["http://explore-master:50051"]);
}
