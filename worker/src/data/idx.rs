//! Reading IDX files (the MNIST format), optionally gzipped.
//!
//! An IDX file starts with a big-endian magic number `0x0000TTDD` (type code `TT`, `0x08` for
//! unsigned bytes, and `DD` dimensions), then `DD` big-endian `u32` sizes, then the data. Images
//! are `0x00000803` (count × height × width, one channel) or `0x00000804` (count × channels ×
//! height × width); labels are `0x00000801` (count). Gzip is detected by its magic bytes
//! `1f 8b`, not by the file name.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::WorkerError;

/// Type code of unsigned-byte data.
const TYPE_U8: u8 = 0x08;
/// Refuse files that would decode to more than this many bytes (16 GiB).
const MAX_DECODED: u64 = 16 << 30;

/// Decoded image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdxImages {
    pub count: usize,
    pub channels: u32,
    pub height: u32,
    pub width: u32,
    /// `count × channels × height × width` bytes, example-major.
    pub pixels: Vec<u8>,
}

/// Reads a file, gunzipping it when it starts with the gzip magic bytes. A missing file is a
/// [`WorkerError::MissingData`] carrying `hint`.
pub(crate) fn read_maybe_gzipped(path: &Path, hint: &str) -> Result<Vec<u8>, WorkerError> {
    let raw = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            WorkerError::MissingData {
                path: path.to_path_buf(),
                hint: hint.to_string(),
            }
        } else {
            WorkerError::io(path, e)
        }
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        MultiGzDecoder::new(raw.as_slice())
            .take(MAX_DECODED)
            .read_to_end(&mut out)
            .map_err(|e| {
                WorkerError::bad_data(path, format!("cannot decompress gzip data: {e}"))
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses the header: returns the dimension sizes and the offset of the data.
fn parse_header(bytes: &[u8], path: &Path, what: &str) -> Result<(Vec<u32>, usize), WorkerError> {
    if bytes.len() < 4 {
        return Err(WorkerError::bad_data(
            path,
            format!("too short for an idx header ({} bytes)", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(WorkerError::bad_data(
            path,
            format!(
                "not an idx file: magic number 0x{:02x}{:02x}{:02x}{:02x} does not start with two zero bytes",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != TYPE_U8 {
        return Err(WorkerError::bad_data(
            path,
            format!(
                "idx data type 0x{:02x} is not supported, only unsigned bytes (0x08) are",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    let offset = 4 + 4 * ndims;
    if bytes.len() < offset {
        return Err(WorkerError::bad_data(
            path,
            format!(
                "truncated idx header: {ndims} dimensions need {offset} bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    let dims = (0..ndims)
        .map(|i| {
            let at = 4 + 4 * i;
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        })
        .collect::<Vec<_>>();
    let expected: u64 = dims.iter().map(|&d| d as u64).product();
    let found = (bytes.len() - offset) as u64;
    if found < expected {
        return Err(WorkerError::bad_data(
            path,
            format!("truncated: the header announces {expected} bytes of {what}, the file holds {found}"),
        ));
    }
    if found > expected {
        return Err(WorkerError::bad_data(
            path,
            format!(
                "{} unexpected trailing bytes after {expected} bytes of {what}",
                found - expected
            ),
        ));
    }
    Ok((dims, offset))
}

/// Parses an image file's bytes (already decompressed); `path` only names it in errors.
pub(crate) fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages, WorkerError> {
    let (dims, offset) = parse_header(bytes, path, "pixels")?;
    let (count, channels, height, width) = match dims.as_slice() {
        [n, h, w] => (*n, 1, *h, *w),
        [n, c, h, w] => (*n, *c, *h, *w),
        _ => {
            return Err(WorkerError::bad_data(
                path,
                format!(
                    "an image file needs 3 dimensions (count, height, width) or 4 (count, channels, height, width), found {}",
                    dims.len()
                ),
            ))
        }
    };
    if count == 0 || channels == 0 || height == 0 || width == 0 {
        return Err(WorkerError::bad_data(
            path,
            format!("empty image file ({count} images of {channels}x{height}x{width})"),
        ));
    }
    Ok(IdxImages {
        count: count as usize,
        channels,
        height,
        width,
        pixels: bytes[offset..].to_vec(),
    })
}

/// Parses a label file's bytes (already decompressed); `path` only names it in errors.
pub(crate) fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>, WorkerError> {
    let (dims, offset) = parse_header(bytes, path, "labels")?;
    if dims.len() != 1 {
        return Err(WorkerError::bad_data(
            path,
            format!("a label file needs 1 dimension, found {}", dims.len()),
        ));
    }
    if dims[0] == 0 {
        return Err(WorkerError::bad_data(path, "empty label file"));
    }
    Ok(bytes[offset..].to_vec())
}

/// Reads and parses an image file.
pub(crate) fn read_images(path: &Path, hint: &str) -> Result<IdxImages, WorkerError> {
    parse_images(&read_maybe_gzipped(path, hint)?, path)
}

/// Reads and parses a label file.
pub(crate) fn read_labels(path: &Path, hint: &str) -> Result<Vec<u8>, WorkerError> {
    parse_labels(&read_maybe_gzipped(path, hint)?, path)
}

/// Encodes images (one channel when `channels == 1` and `three_dims`) as IDX bytes; for tests.
#[cfg(test)]
pub(crate) fn encode_images(
    count: u32,
    channels: u32,
    height: u32,
    width: u32,
    pixels: &[u8],
) -> Vec<u8> {
    let dims: Vec<u32> = if channels == 1 {
        vec![count, height, width]
    } else {
        vec![count, channels, height, width]
    };
    encode(&dims, pixels)
}

/// Encodes labels as IDX bytes; for tests.
#[cfg(test)]
pub(crate) fn encode_labels(labels: &[u8]) -> Vec<u8> {
    encode(&[labels.len() as u32], labels)
}

#[cfg(test)]
fn encode(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, TYPE_U8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Gzips bytes; for tests.
#[cfg(test)]
pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_gzipped_images_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let bytes = encode_images(2, 1, 3, 4, &pixels);
        for (name, content) in [("raw", bytes.clone()), ("gz", gzip(&bytes))] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let img = read_images(&path, "hint").unwrap();
            assert_eq!(
                (img.count, img.channels, img.height, img.width),
                (2, 1, 3, 4)
            );
            assert_eq!(img.pixels, pixels);
        }
    }

    #[test]
    fn four_dimensional_images_carry_channels() {
        let pixels = vec![7u8; 2 * 3 * 2 * 2];
        let img = parse_images(&encode_images(2, 3, 2, 2, &pixels), Path::new("x")).unwrap();
        assert_eq!(
            (img.count, img.channels, img.height, img.width),
            (2, 3, 2, 2)
        );
    }

    #[test]
    fn labels_read_back() {
        let labels = parse_labels(&encode_labels(&[1, 2, 3]), Path::new("l")).unwrap();
        assert_eq!(labels, vec![1, 2, 3]);
    }

    #[test]
    fn truncated_files_name_the_file() {
        let mut bytes = encode_images(2, 1, 3, 4, &[0; 24]);
        bytes.truncate(bytes.len() - 5);
        let err = parse_images(&bytes, Path::new("/d/imgs"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/d/imgs") && err.contains("truncated"),
            "{err}"
        );
        let err = parse_images(&bytes[..9], Path::new("/d/imgs"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated idx header"), "{err}");
    }

    #[test]
    fn truncated_gzip_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let gz = gzip(&encode_images(2, 1, 3, 4, &[9; 24]));
        let path = dir.path().join("broken.gz");
        std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
        let err = read_images(&path, "hint").unwrap_err().to_string();
        assert!(err.contains("broken.gz") && err.contains("gzip"), "{err}");
    }

    #[test]
    fn wrong_magic_and_type_are_refused() {
        let labels = encode_labels(&[1, 2]);
        let err = parse_images(&labels, Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 dimensions"), "{err}");
        let err = parse_labels(b"PK\x03\x04rest", Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an idx file"), "{err}");
        let mut floats = encode_labels(&[1, 2]);
        floats[2] = 0x0d;
        let err = parse_labels(&floats, Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not supported"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode_labels(&[1, 2]);
        bytes.push(0);
        let err = parse_labels(&bytes, Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("trailing"), "{err}");
    }

    #[test]
    fn a_missing_file_carries_the_hint() {
        let err = read_labels(Path::new("/nonexistent/labels.gz"), "check the path")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/labels.gz") && err.contains("check the path"),
            "{err}"
        );
    }
}
