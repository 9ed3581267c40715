//! scikit-learn's 8×8 digits (`digits.csv.gz`, as Debian's `python3-sklearn` ships it): 1,797
//! rows of 64 comma-separated pixel values in 0..=16 followed by the label. Pixels are scaled to
//! bytes (`v · 255 / 16`). The file has no test split, so the last [`DIGITS_TEST_ROWS`] rows are
//! the test file and the others the training file (a fixed cut, the same on every worker).

use std::path::Path;

use super::idx::read_maybe_gzipped;
use crate::error::WorkerError;

/// Rows at the end of the file that form the test split (about a fifth).
pub const DIGITS_TEST_ROWS: usize = 360;
/// Pixels per image.
const PIXELS: usize = 64;

/// Decoded digits: `(pixels, labels)` of the training and test parts.
#[derive(Debug)]
pub(crate) struct Digits {
    pub train: (Vec<u8>, Vec<u8>),
    pub test: (Vec<u8>, Vec<u8>),
}

/// Reads and checks `digits.csv.gz` (or an uncompressed copy); errors name the file and line.
pub(crate) fn read(path: &Path, hint: &str) -> Result<Digits, WorkerError> {
    let bytes = read_maybe_gzipped(path, hint)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| WorkerError::bad_data(path, "is not UTF-8 text".to_string()))?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| WorkerError::bad_data(path, format!("line {}: {reason}", n + 1));
        let values: Vec<&str> = line.split(',').collect();
        if values.len() != PIXELS + 1 {
            return Err(bad(format!(
                "has {} values, expected {} pixels and a label",
                values.len(),
                PIXELS
            )));
        }
        for value in &values[..PIXELS] {
            let v: f64 = value
                .trim()
                .parse()
                .map_err(|_| bad(format!("pixel {value:?} is not a number")))?;
            if !(0.0..=16.0).contains(&v) {
                return Err(bad(format!("pixel {v} is outside 0..=16")));
            }
            pixels.push((v * 255.0 / 16.0).round() as u8);
        }
        let label: f64 = values[PIXELS]
            .trim()
            .parse()
            .map_err(|_| bad(format!("label {:?} is not a number", values[PIXELS])))?;
        if !(0.0..=9.0).contains(&label) || label.fract() != 0.0 {
            return Err(bad(format!("label {label} is not a digit")));
        }
        labels.push(label as u8);
    }
    if labels.len() <= DIGITS_TEST_ROWS {
        return Err(WorkerError::bad_data(
            path,
            format!(
                "has {} rows; at least {} are needed (the last {DIGITS_TEST_ROWS} are the test split)",
                labels.len(),
                DIGITS_TEST_ROWS + 1
            ),
        ));
    }
    let cut = labels.len() - DIGITS_TEST_ROWS;
    let test_pixels = pixels.split_off(cut * PIXELS);
    let test_labels = labels.split_off(cut);
    Ok(Digits {
        train: (pixels, labels),
        test: (test_pixels, test_labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn row(pixel: f64, label: u8) -> String {
        let mut values = vec![format!("{pixel:.1}"); PIXELS];
        values.push(format!("{label}.0"));
        values.join(",")
    }

    #[test]
    fn reads_rows_scales_pixels_and_cuts_the_test_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("digits.csv.gz");
        let text: Vec<String> = (0..DIGITS_TEST_ROWS + 40)
            .map(|i| row(if i % 2 == 0 { 16.0 } else { 8.0 }, (i % 10) as u8))
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.join("\n").as_bytes()).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let digits = read(&path, "hint").unwrap();
        assert_eq!(digits.train.1.len(), 40);
        assert_eq!(digits.test.1.len(), DIGITS_TEST_ROWS);
        assert_eq!(digits.train.0.len(), 40 * PIXELS);
        assert_eq!(digits.train.0[0], 255);
        assert_eq!(digits.train.0[PIXELS], 128);
        assert_eq!(&digits.train.1[..3], &[0, 1, 2]);
        assert_eq!(digits.test.1[0], 0);
    }

    #[test]
    fn bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("digits.csv");
        std::fs::write(&path, format!("{}\n1,2,3\n", row(1.0, 1))).unwrap();
        let err = read(&path, "hint").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("3 values"), "{err}");
        std::fs::write(&path, row(17.0, 1)).unwrap();
        let err = read(&path, "hint").unwrap_err().to_string();
        assert!(err.contains("outside"), "{err}");
        let missing = dir.path().join("none.csv.gz");
        let err = read(&missing, "run scripts/setup.sh")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("none.csv.gz") && err.contains("setup.sh"),
            "{err}"
        );
    }
}
