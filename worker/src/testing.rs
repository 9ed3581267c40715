//! Helpers shared by the unit tests.

use std::sync::{Mutex, MutexGuard};

/// libtorch's random generator is process-wide: tests that seed it, build models or draw random
/// tensors hold this lock so that seeded runs stay reproducible under the parallel test runner.
static TORCH: Mutex<()> = Mutex::new(());

/// Takes the torch lock (ignoring poisoning by a failed test).
pub(crate) fn torch_lock() -> MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}
