//! Mutation tests of the bank's files: every truncation,
//! byte flip and extreme length field of a small bank's MANIFEST and
//! segment (a bank of fixed rows, and one whose entries' rows vary), and
//! random edits (`MAC_FUZZ_SECONDS` runs them longer: `cargo
//! xtask fuzz`). A reader and then the writer open the damaged bank, read
//! every entry, verify and append: each step returns an error naming the
//! damaged file, or works — never a panic or an allocation beyond a bound
//! proportional to the files' size.

use std::fs;
use std::path::Path;

use mac_bank::{BankShape, MemoryBank, NewEntry, Precision};
use mac_fuzz::{Campaign, Kind};

#[global_allocator]
static ALLOC: mac_fuzz::TrackingAllocator = mac_fuzz::TrackingAllocator;

const SHAPE: BankShape = BankShape {
    n_tokens: 2,
    d_mod: 3,
    key_dim: 2,
    rows_vary: false,
    precision: Precision::F32,
};

/// The same with entries of 1 or 2 rows.
const VARYING: BankShape = BankShape {
    rows_vary: true,
    ..SHAPE
};

/// Varying rows of half floats (format 4).
const HALF: BankShape = BankShape {
    rows_vary: true,
    precision: Precision::F16,
    ..SHAPE
};

/// The MANIFEST and segment of a bank of three entries (of 2, 1 and 2
/// rows when the shape lets rows vary).
fn seed_bank(dir: &Path, shape: BankShape) -> (Vec<u8>, Vec<u8>) {
    let mut bank = MemoryBank::create(dir, shape, "fuzz").unwrap();
    for (i, text) in ["first document", "second document", "third"]
        .iter()
        .enumerate()
    {
        let floats = if shape.rows_vary && i == 1 { 3 } else { 6 };
        bank.append(NewEntry {
            source: "seed",
            text,
            modulation: &vec![i as f32 + 0.5; floats],
            key: &[1.0, -1.0],
        })
        .unwrap();
    }
    drop(bank);
    (
        fs::read(dir.join("MANIFEST")).unwrap(),
        fs::read(dir.join("seg-000000.bin")).unwrap(),
    )
}

/// Reads everything a reader can, then opens the writer and appends.
fn exercise(dir: &Path) -> Result<(), String> {
    let e = |err: mac_bank::BankError| err.to_string();
    let reader = MemoryBank::open_read_only(dir).map_err(e)?;
    for i in 0..reader.len() {
        reader.read(i).map_err(e)?;
    }
    for chunk in reader.chunks(2) {
        chunk.map_err(e)?;
    }
    reader.verify().map_err(e)?;
    drop(reader);
    let mut writer = MemoryBank::open(dir).map_err(e)?;
    writer
        .append(NewEntry {
            source: "after",
            text: "a document appended to the damaged bank",
            modulation: &[9.0; 6],
            key: &[0.0, 1.0],
        })
        .map_err(e)?;
    let n = writer.len();
    drop(writer);
    let reopened = MemoryBank::open_read_only(dir).map_err(e)?;
    if reopened.len() != n {
        return Err(format!(
            "MANIFEST/seg-000000.bin: {} entries after reopening, {n} before",
            reopened.len()
        ));
    }
    reopened.verify().map_err(e)?;
    Ok(())
}

fn restore(dir: &Path, manifest: &[u8], segment: &[u8]) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("MANIFEST"), manifest).unwrap();
    fs::write(dir.join("seg-000000.bin"), segment).unwrap();
}

fn damaged_manifest(shape: BankShape, name: &str) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("bank");
    let (manifest, segment) = seed_bank(&dir, shape);
    Campaign::new(name, &manifest, Kind::Text)
        .header_len(0)
        .run(&["MANIFEST", "seg-000000.bin"], |bytes| {
            restore(&dir, bytes, &segment);
            exercise(&dir)
        })
        .assert_passed();
}

fn damaged_segment(shape: BankShape, name: &str) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("bank");
    let (manifest, segment) = seed_bank(&dir, shape);
    Campaign::new(name, &segment, Kind::Binary)
        .header_len(segment.len())
        .run(&["seg-000000.bin"], |bytes| {
            restore(&dir, &manifest, bytes);
            exercise(&dir)
        })
        .assert_passed();
}

#[test]
fn a_damaged_manifest() {
    damaged_manifest(SHAPE, "bank MANIFEST");
}

#[test]
fn a_damaged_segment() {
    damaged_segment(SHAPE, "bank segment");
}

#[test]
fn a_damaged_manifest_of_varying_rows() {
    damaged_manifest(VARYING, "bank MANIFEST, rows varying");
}

#[test]
fn a_damaged_segment_of_varying_rows() {
    damaged_segment(VARYING, "bank segment, rows varying");
}

#[test]
fn a_damaged_manifest_of_half_floats() {
    damaged_manifest(HALF, "bank MANIFEST, half floats");
}

#[test]
fn a_damaged_segment_of_half_floats() {
    damaged_segment(HALF, "bank segment, half floats");
}
