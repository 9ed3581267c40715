//! Two masters on one SQLite data directory: the second refuses to start and names the first;
//! a master killed with SIGKILL leaves no stale lock (the fault suite restarts masters so too).

use std::process::{Command, Stdio};
use std::time::Duration;

use explore_tests::{binary, read_log, MasterProc, Proc};

#[test]
fn a_second_master_is_refused_naming_the_first_and_a_killed_one_can_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pool");
    let mut first = MasterProc::start(&data, &[]).unwrap();
    let pid = first.proc.child.id();

    // Before the lock, the second master started and served; give it time to prove it does not.
    let log = tmp.path().join("second.log");
    let child = Command::new(binary("master"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut second = Proc {
        name: "second master".into(),
        child,
    };
    let status = second
        .wait_timeout(Duration::from_secs(30))
        .expect("two masters serve one data directory: the second did not refuse to start");
    let stderr = read_log(&log);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "data directory {} is in use by master pid {pid} on host ",
            data.display()
        )) && stderr.contains("stop it first"),
        "{stderr}"
    );
    assert!(
        first.proc.is_running(),
        "the refusal must not disturb the holder"
    );

    // SIGKILL: no clean-up at all, yet the kernel frees the lock with the process.
    first.kill().unwrap();
    first.restart(Duration::from_secs(30)).unwrap();
    let status = first.client(&["status"]).unwrap();
    assert!(
        status.status.success(),
        "{}",
        explore_tests::describe(&status)
    );
    let holder = std::fs::read_to_string(data.join("master.lock")).unwrap();
    assert!(
        holder.contains(&format!("pid={}", first.proc.child.id())),
        "{holder}"
    );
}
