//! The CUDA build of the worker must link libtorch_cuda: torch-sys links it only when it finds
//! it, and a worker built without it silently trains on the CPU (`--device auto`) or refuses
//! `--device cuda`. Checked wherever the libtorch the worker is linked against has the CUDA
//! libraries; elsewhere (a CPU-only libtorch) the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

const WORKER: &str = env!("CARGO_BIN_EXE_worker");

/// `ldd` of the worker binary: `(library, resolved path)` pairs.
fn linked_libraries(binary: &Path) -> Option<Vec<(String, PathBuf)>> {
    let out = Command::new("ldd").arg(binary).output().ok()?;
    assert!(
        out.status.success(),
        "ldd {} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.trim().split_once(" => ")?;
                let path = rest.split_whitespace().next()?;
                Some((name.to_string(), PathBuf::from(path)))
            })
            .collect(),
    )
}

/// Direct dependencies (`NEEDED`) of the binary, when `readelf` is installed.
fn needed(binary: &Path) -> Option<Vec<String>> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_string()))
            .collect()
    })
}

#[test]
fn the_cuda_build_of_the_worker_links_libtorch_cuda() {
    let worker = Path::new(WORKER);
    let Some(libs) = linked_libraries(worker) else {
        eprintln!(
            "SKIPPED: ldd is not installed, cannot inspect {}",
            worker.display()
        );
        return;
    };
    let torch_cpu = libs
        .iter()
        .find(|(name, _)| name.starts_with("libtorch_cpu.so"))
        .unwrap_or_else(|| panic!("{} does not link libtorch_cpu: {libs:?}", worker.display()));
    let lib_dir = torch_cpu.1.parent().expect("library directory");
    let cuda_lib = lib_dir.join("libtorch_cuda.so");
    if !cuda_lib.exists() {
        eprintln!(
            "SKIPPED: the libtorch in {} is a CPU build (no libtorch_cuda.so): nothing to check",
            lib_dir.display()
        );
        return;
    }
    let linked = libs
        .iter()
        .find(|(name, _)| name.starts_with("libtorch_cuda.so"))
        .unwrap_or_else(|| {
            panic!(
                "{} exists but the worker does not link it: the worker cannot use a GPU. \
                 Linked: {libs:?}",
                cuda_lib.display()
            )
        });
    assert!(
        linked.1.exists(),
        "libtorch_cuda resolves to {}, which does not exist",
        linked.1.display()
    );
    if let Some(needed) = needed(worker) {
        assert!(
            needed.iter().any(|n| n.starts_with("libtorch_cuda.so")),
            "libtorch_cuda is only linked indirectly, not NEEDED by the worker itself: {needed:?}"
        );
    }
    // Where a GPU is visible, libtorch must see it too (this test links the same libtorch).
    if Path::new("/dev/nvidiactl").exists() {
        assert!(
            tch::Cuda::is_available(),
            "a GPU device node exists and {} is linked, but tch::Cuda::is_available() is false",
            cuda_lib.display()
        );
    } else {
        eprintln!("no GPU on this machine: checked the link only");
    }
}
