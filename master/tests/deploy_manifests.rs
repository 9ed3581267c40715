//! The master's command lines in deploy/ (the Kubernetes base and the Dockerfile) are parsed by
//! the master's own CLI, so they can never drift from it. Overlays may not change a command line:
//! they would escape this test (the worker's side is `worker/src/deploy_manifest_tests.rs`).

#[path = "../../tests/src/manifest.rs"]
mod manifest;

use clap::Parser;
use explore_master::cli::{Cli, Command};
use explore_master::server::ServeConfig;
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
