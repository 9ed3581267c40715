//! Image folders, the layout users have: `root/<class>/<file>.png|jpg|jpeg`.
//!
//! Every subfolder of the root is a class; the class names sorted (byte order) give the label
//! indices 0, 1, …. Inside a class folder, files ending in `.png`, `.jpg` or `.jpeg` (any case)
//! are its images; other files, nested folders and hidden entries (a leading `.`) are ignored.
//! Images of any size, gray or colour (alpha is dropped, 16-bit is scaled, a JPEG's EXIF
//! orientation is applied), are converted to `channels` (1: luminance, 3: RGB) and resized to
//! `size`×`size` (stretched, not cropped) with the image crate's triangle filter, which is
//! bilinear when enlarging and averages over the covered pixels when shrinking, so large photos
//! do not alias (`transform::resize`, four samples per pixel, would).
//!
//! The test file is `test_folder` (its classes must be classes of the root; it may lack some),
//! or else a fixed held-out part of the root: in each class, a seeded permutation of its files
//! (sorted by name) puts the last `round(n × 0.2)` of them (at most `n − 1`) in the test file.
//! The seed is a constant, so every worker holds out the same files, whatever the experiment's
//! split seed; the validation split is then cut from the rest as for any dataset. The test
//! file's examples are in a fixed shuffled order, so `test_subset` takes a mix of classes.
//!
//! Everything is checked before anything is returned: a missing root, a root without class
//! folders, a class folder without an image, or an image that cannot be decoded is an error
//! naming its path, and nothing is half-loaded.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::WorkerError;

/// Fraction of each class held out as the test file when there is no `test_folder`.
pub const FOLDER_TEST_FRACTION: f64 = 0.2;
/// Seed of the held-out permutation (a constant, so the test file is the same everywhere).
const HOLD_OUT_SEED: u64 = 0x666f_6c64_6572;
/// File extensions read as images (compared case-insensitively).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
/// Labels are bytes.
const MAX_CLASSES: usize = 256;
/// Decoder threads at most.
const MAX_THREADS: usize = 8;

/// Decoded image folders: class names (label order) and `(pixels, labels)` of the training and
/// test files, pixels as `[C, size, size]` planes per image.
#[derive(Debug)]
pub(crate) struct Folder {
    pub classes: Vec<String>,
    pub train: (Vec<u8>, Vec<u8>),
    pub test: (Vec<u8>, Vec<u8>),
}

/// Reads `root` (and `test_root`, if given) into images of `channels`×`size`×`size`.
pub(crate) fn read(
    root: &Path,
    test_root: Option<&Path>,
    channels: u32,
    size: u32,
) -> Result<Folder, WorkerError> {
    if !matches!(channels, 1 | 3) || size == 0 {
        return Err(WorkerError::Source(format!(
            "image folders need channels 1 or 3 and a size of at least 1, got {channels} and {size}"
        )));
    }
    let classes = list_classes(root, "data.folder")?;
    let names: Vec<String> = classes.iter().map(|c| c.name.clone()).collect();
    let mut train: Vec<(PathBuf, u8)> = Vec::new();
    let mut test: Vec<(PathBuf, u8)> = Vec::new();
    match test_root {
        Some(test_root) => {
            for (label, class) in classes.into_iter().enumerate() {
                train.extend(class.files.into_iter().map(|f| (f, label as u8)));
            }
            for class in list_classes(test_root, "data.test_folder")? {
                let Some(label) = names.iter().position(|n| *n == class.name) else {
                    return Err(WorkerError::Source(format!(
                        "class folder {} is not a class of the training folder {} (its classes: {})",
                        class.dir.display(),
                        root.display(),
                        names.join(", ")
                    )));
                };
                test.extend(class.files.into_iter().map(|f| (f, label as u8)));
            }
        }
        None => {
            for (label, class) in classes.into_iter().enumerate() {
                let mut files = class.files;
                let n = files.len();
                let n_test = ((n as f64 * FOLDER_TEST_FRACTION).round() as usize).min(n - 1);
                files.shuffle(&mut ChaCha8Rng::seed_from_u64(HOLD_OUT_SEED + label as u64));
                let held = files.split_off(n - n_test);
                // the training file in name order; the split permutes it anyway
                files.sort();
                train.extend(files.into_iter().map(|f| (f, label as u8)));
                test.extend(held.into_iter().map(|f| (f, label as u8)));
            }
            if test.is_empty() {
                return Err(WorkerError::Source(format!(
                    "image folder {} has too few images to hold out a test split (a fifth of \
                     each class, rounded, keeping one for training); add images or give \
                     data.test_folder",
                    root.display()
                )));
            }
        }
    }
    test.shuffle(&mut ChaCha8Rng::seed_from_u64(HOLD_OUT_SEED ^ 0x7465_7374));
    let (train_files, train_labels): (Vec<PathBuf>, Vec<u8>) = train.into_iter().unzip();
    let (test_files, test_labels): (Vec<PathBuf>, Vec<u8>) = test.into_iter().unzip();
    let train_pixels = decode_all(&train_files, channels, size)?;
    let test_pixels = decode_all(&test_files, channels, size)?;
    Ok(Folder {
        classes: names,
        train: (train_pixels, train_labels),
        test: (test_pixels, test_labels),
    })
}

/// One class folder: its name and its image files, sorted by name.
struct Class {
    name: String,
    dir: PathBuf,
    files: Vec<PathBuf>,
}

/// The class folders of `root`, sorted by name, each with at least one image; `key` is the
/// spec key that names `root`, for the errors.
fn list_classes(root: &Path, key: &str) -> Result<Vec<Class>, WorkerError> {
    let layout = "expected one subfolder per class holding .png, .jpg or .jpeg images \
                  (root/<class>/<image>.png)";
    if !root.exists() {
        return Err(WorkerError::Source(format!(
            "image folder {} ({key}) does not exist on this worker; {layout}",
            root.display()
        )));
    }
    if !root.is_dir() {
        return Err(WorkerError::Source(format!(
            "image folder {} ({key}) is not a directory; {layout}",
            root.display()
        )));
    }
    let mut dirs: Vec<PathBuf> = visible_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(WorkerError::Source(format!(
            "image folder {} ({key}) has no class subfolders; {layout}",
            root.display()
        )));
    }
    if dirs.len() > MAX_CLASSES {
        return Err(WorkerError::Source(format!(
            "image folder {} ({key}) has {} class subfolders; at most {MAX_CLASSES} are supported",
            root.display(),
            dirs.len()
        )));
    }
    let mut classes = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let mut files: Vec<PathBuf> = visible_entries(&dir)?
            .into_iter()
            .filter(|p| is_image_name(p) && p.is_file())
            .collect();
        if files.is_empty() {
            return Err(WorkerError::Source(format!(
                "class folder {} has no .png, .jpg or .jpeg image",
                dir.display()
            )));
        }
        files.sort();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        classes.push(Class { name, dir, files });
    }
    Ok(classes)
}

/// The entries of `dir` whose names do not start with a dot.
fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>, WorkerError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| WorkerError::io(dir, e))? {
        let entry = entry.map_err(|e| WorkerError::io(dir, e))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Decodes `files` into `channels`×`size`×`size` images, one after the other, on a few threads.
/// The error, if any, is the first failing file in `files` order.
fn decode_all(files: &[PathBuf], channels: u32, size: u32) -> Result<Vec<u8>, WorkerError> {
    let per_image = channels as usize * size as usize * size as usize;
    let mut out = vec![0u8; files.len() * per_image];
    if files.is_empty() {
        return Ok(out);
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        .min(files.len());
    let chunk = files.len().div_ceil(threads);
    let results: Vec<Result<(), WorkerError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .zip(out.chunks_mut(chunk * per_image))
            .map(|(files, out)| {
                scope.spawn(move || {
                    for (file, image) in files.iter().zip(out.chunks_exact_mut(per_image)) {
                        image.copy_from_slice(&decode(file, channels, size)?);
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(WorkerError::Source(
                        "an image decoder thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(out)
}

/// One image file as `channels` planes of `size`×`size` bytes.
pub(crate) fn decode(path: &Path, channels: u32, size: u32) -> Result<Vec<u8>, WorkerError> {
    let bad = |e: image::ImageError| {
        WorkerError::bad_data(
            path,
            format!("cannot be decoded as a PNG or JPEG image: {e}"),
        )
    };
    let reader = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| WorkerError::io(path, e))?;
    let mut decoder = reader.into_decoder().map_err(bad)?;
    let orientation = decoder.orientation().map_err(bad)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(bad)?;
    image.apply_orientation(orientation);
    let plane = size as usize * size as usize;
    Ok(if channels == 1 {
        let gray = image.to_luma8();
        image::imageops::resize(&gray, size, size, FilterType::Triangle).into_raw()
    } else {
        let rgb = image.to_rgb8();
        let rgb = image::imageops::resize(&rgb, size, size, FilterType::Triangle).into_raw();
        // interleaved RGB → three planes
        let mut planes = vec![0u8; 3 * plane];
        for (i, pixel) in rgb.chunks_exact(3).enumerate() {
            for (c, &v) in pixel.iter().enumerate() {
                planes[c * plane + i] = v;
            }
        }
        planes
    })
}

#[cfg(test)]
mod tests;
