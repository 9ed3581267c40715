use std::path::Path;

use image::{GrayImage, Luma, Rgb, RgbImage};

use super::*;
use crate::data::{DataSource, Dataset, SplitConfig};

/// Gray level of every image of class `i` (constant images, so resizing keeps them exact and
/// JPEG nearly so).
const LEVELS: [u8; 3] = [30, 130, 230];

fn gray(path: &Path, (w, h): (u32, u32), level: u8) {
    GrayImage::from_pixel(w, h, Luma([level]))
        .save(path)
        .unwrap();
}

fn rgb(path: &Path, (w, h): (u32, u32), colour: [u8; 3]) {
    RgbImage::from_pixel(w, h, Rgb(colour)).save(path).unwrap();
}

/// `root/<class>/…` with three classes created out of name order, `per_class` images each of
/// mixed formats, sizes and colour types, plus files and folders that are not images.
fn write_classes(root: &Path, per_class: usize) {
    for (name, level) in [("owl", LEVELS[2]), ("ant", LEVELS[0]), ("cat", LEVELS[1])] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let size = (5 + i as u32 * 3, 4 + i as u32 * 7 % 13);
            match i % 3 {
                0 => gray(&dir.join(format!("{i:02}.png")), size, level),
                1 => rgb(&dir.join(format!("{i:02}.jpg")), size, [level; 3]),
                _ => rgb(&dir.join(format!("{i:02}.PNG")), size, [level; 3]),
            }
        }
        std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
        std::fs::write(dir.join(".hidden.png"), "ignored").unwrap();
        std::fs::create_dir_all(dir.join("nested")).unwrap();
    }
    std::fs::write(root.join("README"), "a file beside the classes is ignored").unwrap();
    std::fs::create_dir_all(root.join(".cache")).unwrap();
}

fn assert_close(a: u8, b: u8, what: &str) {
    assert!((a as i32 - b as i32).abs() <= 3, "{what}: {a} vs {b}");
}

#[test]
fn labels_follow_sorted_class_names_and_every_image_is_resized() {
    let dir = tempfile::tempdir().unwrap();
    write_classes(dir.path(), 10);
    let folder = read(dir.path(), None, 1, 12).unwrap();
    assert_eq!(folder.classes, vec!["ant", "cat", "owl"]);
    let (pixels, labels) = &folder.train;
    let (test_pixels, test_labels) = &folder.test;
    // a fifth of each class is held out: 2 of 10
    assert_eq!((labels.len(), test_labels.len()), (24, 6));
    assert_eq!(pixels.len(), 24 * 12 * 12);
    assert_eq!(test_pixels.len(), 6 * 12 * 12);
    for (split, (pixels, labels)) in [("train", &folder.train), ("test", &folder.test)] {
        for (image, &label) in pixels.chunks_exact(144).zip(labels) {
            for &v in image {
                assert_close(v, LEVELS[label as usize], split);
            }
        }
        for class in 0..3u8 {
            assert!(labels.contains(&class), "{split} lacks class {class}");
        }
    }
}

#[test]
fn gray_and_colour_convert_to_the_asked_channels() {
    let dir = tempfile::tempdir().unwrap();
    let (g, r) = (dir.path().join("g.png"), dir.path().join("r.jpeg"));
    gray(&g, (9, 5), 100);
    rgb(&r, (31, 17), [255, 0, 0]);
    // gray → RGB repeats the level in every plane
    let out = decode(&g, 3, 4).unwrap();
    assert_eq!(out, vec![100; 3 * 16]);
    // RGB → planes R, G, B
    let out = decode(&r, 3, 4).unwrap();
    assert_eq!(out.len(), 48);
    out[..16].iter().for_each(|&v| assert_close(v, 254, "red"));
    out[16..]
        .iter()
        .for_each(|&v| assert_close(v, 0, "green and blue"));
    // RGB → gray is the luminance (about 0.21 · red)
    let out = decode(&r, 1, 6).unwrap();
    assert_eq!(out.len(), 36);
    assert!(out.iter().all(|&v| (40..=70).contains(&v)), "{out:?}");
    // shrinking averages: a fine checkerboard becomes mid-gray, not aliased black or white
    let board = GrayImage::from_fn(64, 64, |x, y| {
        Luma([if (x + y) % 2 == 0 { 0 } else { 255 }])
    });
    let b = dir.path().join("board.png");
    board.save(&b).unwrap();
    let out = decode(&b, 1, 8).unwrap();
    assert!(out.iter().all(|&v| (100..=155).contains(&v)), "{out:?}");
}

#[test]
fn the_held_out_test_part_and_the_split_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    write_classes(dir.path(), 12);
    let source = DataSource::Folder {
        root: dir.path().to_path_buf(),
        test_root: None,
        channels: 3,
        size: 8,
    };
    let a = Dataset::load(&source).unwrap();
    let b = Dataset::load(&source).unwrap();
    assert_eq!(a, b);
    assert_eq!((a.channels, a.height, a.width, a.num_classes), (3, 8, 8, 3));
    // round(12 × 0.2) = 2 of each class
    assert_eq!((a.train_len(), a.test_len()), (30, 6));
    let cfg = SplitConfig {
        split_seed: 4,
        ..SplitConfig::default()
    };
    assert_eq!(a.select(&cfg, 4).unwrap(), b.select(&cfg, 4).unwrap());
    let (train, val) = a.select(&cfg, 4).unwrap();
    assert_eq!((train.len(), val.len()), (27, 3));
    assert_ne!(a.select(&cfg, 5).unwrap(), (train, val));
}

#[test]
fn a_test_folder_is_labelled_by_the_training_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (dir.path().join("train"), dir.path().join("test"));
    write_classes(&train, 3);
    // the test folder lacks "ant": "owl" is still label 2
    for (name, level) in [("owl", LEVELS[2]), ("cat", LEVELS[1])] {
        std::fs::create_dir_all(test.join(name)).unwrap();
        gray(&test.join(name).join("x.png"), (50, 50), level);
    }
    let folder = read(&train, Some(&test), 1, 5).unwrap();
    assert_eq!(folder.train.1.len(), 9);
    let mut labels = folder.test.1.clone();
    labels.sort();
    assert_eq!(labels, vec![1, 2]);
    for (image, &label) in folder.test.0.chunks_exact(25).zip(&folder.test.1) {
        assert_close(image[0], LEVELS[label as usize], "test");
    }
    // a class the training folder does not have is named
    std::fs::create_dir_all(test.join("yak")).unwrap();
    gray(&test.join("yak").join("y.png"), (3, 3), 1);
    let err = read(&train, Some(&test), 1, 5).unwrap_err().to_string();
    assert!(
        err.contains(&test.join("yak").display().to_string()) && err.contains("ant, cat, owl"),
        "{err}"
    );
}

#[test]
fn bad_folders_and_images_are_named_and_nothing_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let load = |root: &Path| {
        Dataset::load(&DataSource::Folder {
            root: root.to_path_buf(),
            test_root: None,
            channels: 1,
            size: 28,
        })
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let named = |err: &str, path: &Path, what: &str| {
        assert!(
            err.contains(&path.display().to_string()) && err.contains(what),
            "{err}"
        );
    };
    // a folder that does not exist
    named(&load(&root), &root, "does not exist");
    // no class subfolders
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.png"), "").unwrap();
    named(&load(&root), &root, "no class subfolders");
    // a class folder without an image, named (not its sibling)
    write_classes(&root, 6);
    let empty = root.join("bee");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("readme.md"), "no images here").unwrap();
    named(&load(&root), &empty, "no .png, .jpg or .jpeg image");
    std::fs::remove_dir_all(&empty).unwrap();
    // an image that cannot be decoded, by path
    let broken = root.join("cat").join("03.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff\xe0 truncated").unwrap();
    named(&load(&root), &broken, "cannot be decoded");
    let text = root.join("owl").join("zz.png");
    std::fs::write(&text, "plain text").unwrap();
    std::fs::remove_file(&broken).unwrap();
    named(&load(&root), &text, "cannot be decoded");
    std::fs::remove_file(&text).unwrap();
    // too few images to hold a test part out, unless a test folder is given
    let tiny = dir.path().join("tiny");
    write_classes(&tiny, 2);
    named(&load(&tiny), &tiny, "data.test_folder");
    assert!(read(&tiny, Some(&root), 1, 4).is_ok());
    // and the repaired folder loads
    assert!(read(&root, None, 1, 4).is_ok());
}

#[test]
fn a_data_config_with_folders_splits_into_tensors_and_folder_domains() {
    use crate::data::{DataPlan, DatasetCache};
    use tch::Device;

    let _guard = crate::testing::torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pets");
    write_classes(&root, 10);
    let file = dir.path().join("data.toml");
    std::fs::write(
        &file,
        format!(
            "[data]\ndataset = \"folder\"\nfolder = {:?}\nchannels = 3\nsize = 16\n\
             validation_fraction = 0.25\n",
            root.display().to_string()
        ),
    )
    .unwrap();
    let cfg = crate::cli::read_data_config(&file).unwrap();
    let plan = DataPlan::resolve(&cfg, Path::new("/nowhere"), &DatasetCache::new()).unwrap();
    assert_eq!(
        (plan.input_shape().channels, plan.input_shape().height),
        (3, 16)
    );
    let split = plan
        .split(&SplitConfig::from_config(&cfg, 3), Device::Cpu)
        .unwrap();
    assert_eq!(split.train_x.size(), vec![18, 3, 16, 16]);
    assert_eq!(split.val_x.size(), vec![6, 3, 16, 16]);
    assert_eq!(split.test_x.size(), vec![6, 3, 16, 16]);
    assert_eq!(split.num_classes, 3);

    // domains of the folder: an upright and a rotated training domain, an inverted target
    std::fs::write(
        &file,
        format!(
            "[data]\ndataset = \"folder\"\nfolder = {:?}\nsize = 12\n\
             [[data.domains]]\nname = \"upright\"\n\
             [[data.domains]]\nname = \"rot90\"\ntransform = {{ rotate = 90 }}\n\
             [[data.domains]]\nname = \"inverted\"\ntarget = true\ntransform = {{ invert = true }}\n",
            root.display().to_string()
        ),
    )
    .unwrap();
    let cfg = crate::cli::read_data_config(&file).unwrap();
    let cache = DatasetCache::new();
    let plan = DataPlan::resolve(&cfg, Path::new("/nowhere"), &cache).unwrap();
    assert_eq!(
        cache.len(),
        1,
        "the folder is decoded once for all its domains"
    );
    let split = plan
        .split(&SplitConfig::from_config(&cfg, 3), Device::Cpu)
        .unwrap();
    assert_eq!(split.domain_names, vec!["upright", "rot90"]);
    assert_eq!(split.train_len() + split.val_len(), 2 * 24);
    assert_eq!(split.test_x.size(), vec![6, 1, 12, 12]);
}
