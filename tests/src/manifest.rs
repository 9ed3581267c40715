//! Command lines in the deployment files, read without a YAML library: the `command` and `args`
//! of a named container in a Kubernetes manifest, and the `ENTRYPOINT` and `CMD` of a
//! Dockerfile. The master's and the worker's CLI tests (`master/tests/deploy_manifests.rs`,
//! `worker/src/deploy_manifest_tests.rs`, which include this file by path) parse what these
//! return with the binaries' own clap definitions, so a manifest can never drift from the CLI.
//!
//! The reader understands the block style the manifests are written in (`key:` followed by
//! `- item` lines, or a flow list `["a", "b"]` on one line; plain, single- or double-quoted
//! scalars) and fails on anything else rather than guessing.

use std::path::{Path, PathBuf};

/// The repository's root: the parent of the crate that compiles this file (every crate of the
/// workspace sits directly under the root).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("a crate directory has a parent")
        .to_path_buf()
}

/// Reads a file under the repository root.
pub fn read_repo_file(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `command` followed by `args` of the container named `container` in a manifest (several
/// documents allowed); an error when the container, its command, or the syntax is not found.
pub fn container_argv(yaml: &str, container: &str) -> Result<Vec<String>, String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let start = lines
        .iter()
        .position(|l| {
            l.trim_start()
                .strip_prefix("- name:")
                .is_some_and(|n| unquote(n.trim()) == container)
        })
        .ok_or_else(|| format!("no container named {container}"))?;
    let dash = indent(lines[start]);
    let key_indent = dash + 2;
    // The container's lines: up to the next line at or left of its `- `.
    let end = lines[start + 1..]
        .iter()
        .position(|l| is_content(l) && indent(l) <= dash)
        .map_or(lines.len(), |i| start + 1 + i);
    let body = &lines[start + 1..end];
    let list = |key: &str| -> Result<Option<Vec<String>>, String> {
        let Some(at) = body.iter().position(|l| {
            indent(l) == key_indent && l.trim_start().starts_with(&format!("{key}:"))
        }) else {
            return Ok(None);
        };
        let rest = strip_comment(body[at].trim_start()[key.len() + 1..].trim());
        if !rest.is_empty() {
            return flow_list(rest).map(Some);
        }
        let mut items = Vec::new();
        for l in &body[at + 1..] {
            if !is_content(l) {
                continue;
            }
            let trimmed = l.trim_start();
            match trimmed.strip_prefix("- ") {
                Some(item) if indent(l) >= key_indent => items.push(scalar(item)?),
                _ if indent(l) <= key_indent => break,
                _ => return Err(format!("{key}: cannot read {l:?}")),
            }
        }
        Ok(Some(items))
    };
    let mut argv =
        list("command")?.ok_or_else(|| format!("container {container} has no command"))?;
    argv.extend(list("args")?.unwrap_or_default());
    Ok(argv)
}

/// `ENTRYPOINT` followed by `CMD` of a Dockerfile's last stage (both in JSON form).
pub fn dockerfile_argv(dockerfile: &str) -> Result<Vec<String>, String> {
    let last = |instruction: &str| -> Result<Vec<String>, String> {
        let line = dockerfile
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(instruction)?.strip_prefix(' '))
            .ok_or_else(|| format!("no {instruction}"))?;
        flow_list(line.trim())
    };
    let mut argv = last("ENTRYPOINT")?;
    argv.extend(last("CMD")?);
    Ok(argv)
}

/// Whether the line holds more than white space or a comment.
fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#')
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Removes a trailing ` # comment` outside quotes.
fn strip_comment(s: &str) -> &str {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i == 0 || s[..i].ends_with(' ') => return s[..i].trim_end(),
            _ => {}
        }
    }
    s
}

/// One list item: plain, "double" or 'single' quoted.
fn scalar(item: &str) -> Result<String, String> {
    let s = strip_comment(item.trim());
    if s.starts_with(['|', '>', '[', '{', '&', '*', '!']) {
        return Err(format!("unsupported YAML item {s:?}"));
    }
    Ok(unquote(s))
}

fn unquote(s: &str) -> String {
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// A one-line flow list of strings, `["a", "b"]` (also a Dockerfile's JSON form).
fn flow_list(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("not a one-line list: {s:?}"))?;
    if inner.contains('\\') {
        return Err(format!("escapes are not supported: {s:?}"));
    }
    Ok(inner
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(unquote)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
kind: Deployment
spec:
  template:
    spec:
      containers:
        - name: sidecar
          command: ["other"]
        - name: "master"
          image: x
          command: ["master"]   # the binary
          args:
            - serve
            # a comment
            - --listen
            - "0.0.0.0:50051"
            - '300'
          ports:
            - name: grpc
---
kind: Job
"#;

    #[test]
    fn a_named_container_s_command_and_args_are_read() {
        assert_eq!(
            container_argv(MANIFEST, "master").unwrap(),
            ["master", "serve", "--listen", "0.0.0.0:50051", "300"]
        );
        assert_eq!(container_argv(MANIFEST, "sidecar").unwrap(), ["other"]);
        assert!(container_argv(MANIFEST, "worker").is_err());
        assert!(
            container_argv("- name: x\n  args: [a]\n", "x").is_err(),
            "no command"
        );
        assert!(container_argv("- name: x\n  command:\n    - |\n", "x").is_err());
    }

    #[test]
    fn a_dockerfile_s_entrypoint_and_cmd_are_read() {
        let d = "FROM a AS b\nCMD [\"x\"]\nFROM c\nENTRYPOINT [\"master\"]\nCMD [\"serve\", \"--listen\", \"0.0.0.0:1\"]\n";
        assert_eq!(
            dockerfile_argv(d).unwrap(),
            ["master", "serve", "--listen", "0.0.0.0:1"]
        );
    }
}
