//! A bank of half floats (format 4): values stored in two bytes each and
//! read back widened, within half precision of what was appended; values
//! half floats cannot hold refused; repaired with or without its
//! manifest into a bank of the same precision; not mixed with f32 records.

use std::fs;

use mac_bank::{repair, BankShape, MemoryBank, NewEntry, Precision};

const HALF: BankShape = BankShape {
    n_tokens: 4,
    d_mod: 3,
    key_dim: 1,
    rows_vary: true,
    precision: Precision::F16,
};

/// Entry `i`'s values: `rows · 3` of them, not exactly representable in f16.
fn values(i: usize, rows: usize) -> Vec<f32> {
    (0..rows * 3)
        .map(|j| (i as f32 + 1.0) * 0.1 + j as f32 / 7.0)
        .collect()
}

fn fill(bank: &mut MemoryBank) {
    for (i, rows) in [2, 4, 1].into_iter().enumerate() {
        bank.append(NewEntry {
            source: "test",
            text: &format!("document {i}"),
            modulation: &values(i, rows),
            key: &[i as f32 / 3.0],
        })
        .unwrap();
    }
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= w.abs() / 1024.0, "{g} for {w}");
        assert_ne!(g, w, "{w} is not a half float; it must come back rounded");
    }
}

#[test]
fn half_floats_round_trip_within_their_precision() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = MemoryBank::create(dir.path(), HALF, "test").unwrap();
    fill(&mut bank);
    let err = bank
        .append(NewEntry {
            source: "huge",
            text: "a document with a value half floats cannot hold",
            modulation: &[1e6, 0.0, 0.0],
            key: &[0.0],
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("beyond what f16 stores"), "{err}");
    drop(bank);
    let manifest = fs::read_to_string(dir.path().join("MANIFEST")).unwrap();
    assert!(manifest.contains("\"precision\": \"f16\""), "{manifest}");
    assert!(manifest.contains("\"version\": 4"), "{manifest}");
    let reader = MemoryBank::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.shape(), HALF);
    for (i, rows) in [2, 4, 1].into_iter().enumerate() {
        let e = reader.read(i).unwrap();
        assert_close(&e.modulation, &values(i, rows));
        assert_eq!(e.key, vec![i as f32 / 3.0], "keys stay f32");
    }
    let chunk = reader.chunks(8).next().unwrap().unwrap();
    assert_eq!(chunk.rows, vec![2, 4, 1]);
    assert_eq!(chunk.data.len(), 7 * 3);
    reader.verify().unwrap();
    // Half the bytes of the same bank in f32, less the fixed parts.
    let f32_dir = tempfile::tempdir().unwrap();
    let mut full = MemoryBank::create(
        f32_dir.path(),
        BankShape {
            precision: Precision::F32,
            ..HALF
        },
        "test",
    )
    .unwrap();
    fill(&mut full);
    assert_eq!(full.size_bytes() - reader.size_bytes(), 7 * 3 * 2);
}

#[test]
fn a_bank_of_half_floats_is_repaired_with_or_without_its_manifest() {
    for lose_manifest in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let damaged = dir.path().join("damaged");
        let mut bank = MemoryBank::create(&damaged, HALF, "test").unwrap();
        fill(&mut bank);
        drop(bank);
        if lose_manifest {
            fs::write(damaged.join("MANIFEST"), b"{ not json").unwrap();
        }
        let out = dir.path().join("repaired");
        let report = repair(&damaged, &out).unwrap();
        assert_eq!(report.copied.len(), 3);
        assert_eq!(report.shape.precision, Precision::F16);
        let repaired = MemoryBank::open_read_only(&out).unwrap();
        assert_eq!(repaired.shape().precision, Precision::F16);
        let original = MemoryBank::open_read_only(&damaged);
        for i in 0..3 {
            let e = repaired.read(i).unwrap();
            if let Ok(original) = &original {
                assert_eq!(e.modulation, original.read(i).unwrap().modulation);
            }
            assert_close(&e.modulation, &values(i, e.modulation.len() / 3));
        }
    }
}

#[test]
fn a_manifest_that_names_f32_over_half_float_records_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = MemoryBank::create(dir.path(), HALF, "test").unwrap();
    fill(&mut bank);
    drop(bank);
    let path = dir.path().join("MANIFEST");
    let manifest = fs::read_to_string(&path).unwrap();
    let as_f32 = manifest.replace("\"precision\": \"f16\"", "\"precision\": \"f32\"");
    assert_ne!(as_f32, manifest);
    fs::write(&path, as_f32).unwrap();
    let err = refused(dir.path(), "f32 records expected, f16 found");
    assert!(
        err.contains("seg-000000.bin") && err.contains("magic"),
        "{err}"
    );
    fs::write(&path, manifest.replace("\"version\": 4", "\"version\": 3")).unwrap();
    let err = refused(dir.path(), "f16 before format 4");
    assert!(err.contains("format 4"), "{err}");
}

/// The error opening the bank in `dir` gives, which it must.
fn refused(dir: &std::path::Path, why: &str) -> String {
    match MemoryBank::open_read_only(dir) {
        Ok(_) => panic!("opened: {why}"),
        Err(e) => e.to_string(),
    }
}
