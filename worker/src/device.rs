//! Choosing the libtorch device a worker trains on.

use tch::{Cuda, Device};

use crate::error::WorkerError;

/// Parses a device name: `auto` (the first GPU when CUDA is available, else the CPU), `cpu`,
/// `cuda` (the first GPU) or `cuda:N`. Asking for a GPU that does not exist is an error.
pub fn parse_device(s: &str) -> Result<Device, WorkerError> {
    let name = s.trim().to_ascii_lowercase();
    match name.as_str() {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0, s),
        other => match other.strip_prefix("cuda:") {
            Some(index) => {
                let index: usize = index.parse().map_err(|_| {
                    WorkerError::Device(format!(
                        "{s:?}: the gpu index must be a non-negative integer"
                    ))
                })?;
                cuda(index, s)
            }
            None => Err(WorkerError::Device(format!(
                "{s:?}: expected auto, cpu, cuda or cuda:N"
            ))),
        },
    }
}

fn cuda(index: usize, requested: &str) -> Result<Device, WorkerError> {
    if !Cuda::is_available() {
        return Err(WorkerError::Device(format!(
            "{requested:?}: cuda is not available (no gpu visible, or libtorch was built without cuda)"
        )));
    }
    let count = Cuda::device_count().max(0) as usize;
    if index >= count {
        return Err(WorkerError::Device(format!(
            "{requested:?}: gpu {index} does not exist, {count} gpu(s) visible (cuda:0..cuda:{})",
            count.saturating_sub(1)
        )));
    }
    Ok(Device::Cuda(index))
}

/// A short human-readable name of a device, in the syntax [`parse_device`] accepts.
pub fn describe(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".to_string(),
        Device::Vulkan => "vulkan".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_parse() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device(" CPU ").unwrap(), Device::Cpu);
        let auto = parse_device("auto").unwrap();
        assert_eq!(auto, Device::cuda_if_available());
        assert_eq!(describe(Device::Cpu), "cpu");
        assert_eq!(describe(Device::Cuda(1)), "cuda:1");
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
        let err = parse_device("cuda:x").unwrap_err().to_string();
        assert!(err.contains("non-negative integer"), "{err}");
    }

    #[test]
    fn a_gpu_that_does_not_exist_is_refused() {
        let err = parse_device("cuda:99").unwrap_err().to_string();
        assert!(
            err.contains("does not exist") || err.contains("not available"),
            "{err}"
        );
    }
}
