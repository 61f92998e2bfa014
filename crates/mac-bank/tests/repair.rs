//! `repair` copies every intact committed record of a damaged bank into a
//! new one and reports the rest; `verify` lists every damaged entry.

use std::fs;
use std::path::Path;

use mac_bank::{repair, BankShape, MemoryBank, NewEntry, Precision};

const SHAPE: BankShape = BankShape {
    n_tokens: 2,
    d_mod: 3,
    key_dim: 2,
    rows_vary: false,
    precision: Precision::F32,
};

fn text(i: usize) -> String {
    format!("document number {i} says something {}", "x".repeat(i))
}

fn modulation(i: usize) -> Vec<f32> {
    (0..6).map(|j| (i * 10 + j) as f32).collect()
}

/// A bank of 12 entries; returns where each record starts in its segment.
fn bank_of_twelve(dir: &Path) -> Vec<usize> {
    let mut bank = MemoryBank::create(dir, SHAPE, "producer of the test").unwrap();
    for i in 0..12 {
        bank.append(NewEntry {
            source: "src",
            text: &text(i),
            modulation: &modulation(i),
            key: &[i as f32, -(i as f32)],
        })
        .unwrap();
    }
    let seg = fs::read(dir.join("seg-000000.bin")).unwrap();
    let starts: Vec<usize> = (0..seg.len() - 3)
        .filter(|&p| &seg[p..p + 4] == b"MACE")
        .collect();
    assert_eq!(starts.len(), 12);
    starts
}

fn edit_segment(dir: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let path = dir.join("seg-000000.bin");
    let mut bytes = fs::read(&path).unwrap();
    edit(&mut bytes);
    fs::write(&path, bytes).unwrap();
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// The copied bank holds exactly the entries `kept` of the original, intact.
fn assert_holds(out: &Path, kept: &[usize]) {
    let bank = MemoryBank::open_read_only(out).unwrap();
    bank.verify().unwrap();
    assert_eq!(bank.len(), kept.len());
    assert_eq!(bank.shape(), SHAPE);
    assert_eq!(bank.producer(), "producer of the test");
    for (pos, &i) in kept.iter().enumerate() {
        let e = bank.read(pos).unwrap();
        assert_eq!(e.text, text(i));
        assert_eq!(e.source, "src");
        assert_eq!(e.modulation, modulation(i));
        assert_eq!(e.key, vec![i as f32, -(i as f32)]);
    }
}

#[test]
fn intact_records_are_copied_and_the_damage_reported() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("damaged");
    let starts = bank_of_twelve(&dir);
    edit_segment(&dir, |b| {
        b[starts[3] + 100] ^= 0x20; // inside entry 3's body: its checksum fails
        b[starts[7]] = b'X'; // entry 7's frame: no magic
        b.extend_from_slice(b"MACE torn write past the committed length");
    });
    let before = snapshot(&dir);
    let out = root.path().join("repaired");
    let report = repair(&dir, &out).unwrap();
    assert_eq!(snapshot(&dir), before, "the damaged bank is only read");
    assert!(report.manifest_used);
    let kept: Vec<usize> = (0..12).filter(|&i| i != 3 && i != 7).collect();
    assert_eq!(
        report.copied,
        kept.iter()
            .enumerate()
            .map(|(new, &old)| (old as u64, new as u64))
            .collect::<Vec<_>>()
    );
    assert_holds(&out, &kept);
    let reasons: Vec<&str> = report.dropped.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(report.dropped.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("checksum mismatch (entry 3)"),
        "{reasons:?}"
    );
    assert_eq!(report.dropped[0].offset, starts[3] as u64);
    assert_eq!(report.dropped[0].bytes, (starts[4] - starts[3]) as u64);
    assert!(reasons[1].contains("no record magic"), "{reasons:?}");
    assert_eq!(report.dropped[1].offset, starts[7] as u64);
    assert!(reasons[2].contains("never acknowledged"), "{reasons:?}");
}

#[test]
fn a_lost_manifest_is_rebuilt_from_the_records() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("damaged");
    let starts = bank_of_twelve(&dir);
    fs::write(dir.join("MANIFEST"), b"{\"format\": \"mac-bank-ba").unwrap();
    edit_segment(&dir, |b| b[starts[0] + 60] ^= 1); // the first record too
    let out = root.path().join("repaired");
    let report = repair(&dir, &out).unwrap();
    assert!(!report.manifest_used);
    assert!(report.dropped[0].file == "MANIFEST" && report.dropped[0].reason.contains("unusable"));
    let kept: Vec<usize> = (1..12).collect();
    let bank = MemoryBank::open_read_only(&out).unwrap();
    assert_eq!(bank.len(), kept.len());
    assert_eq!(bank.shape(), SHAPE, "the shape comes from the records");
    for (pos, &i) in kept.iter().enumerate() {
        assert_eq!(bank.read(pos).unwrap().text, text(i));
    }
}

#[test]
fn repair_refuses_to_overwrite_a_bank() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("damaged");
    bank_of_twelve(&dir);
    let out = root.path().join("existing");
    MemoryBank::create(&out, SHAPE, "other").unwrap();
    let err = repair(&dir, &out).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(MemoryBank::open_read_only(&out).unwrap().len(), 0);
}

#[test]
fn verify_lists_every_damaged_entry() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("bank");
    let starts = bank_of_twelve(&dir);
    edit_segment(&dir, |b| {
        b[starts[2] + 100] ^= 4;
        b[starts[9] + 100] ^= 4;
    });
    let err = MemoryBank::open_read_only(&dir)
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 of 12 entries are damaged"), "{err}");
    assert!(
        err.contains("entry 2 ") && err.contains("entry 9 "),
        "{err}"
    );
    assert!(err.contains("seg-000000.bin"), "{err}");
}
