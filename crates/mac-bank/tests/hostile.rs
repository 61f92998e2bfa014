//! A bank whose files say hostile or impossible things, and readers beside
//! a writer: every open checks the manifest before touching a file it
//! names, and readers never lock, write or truncate.

use std::path::Path;

use mac_bank::{BankError, BankShape, MemoryBank, NewEntry, Precision};
use serde_json::Value;

const SHAPE: BankShape = BankShape {
    n_tokens: 2,
    d_mod: 3,
    key_dim: 0,
    rows_vary: false,
    precision: Precision::F32,
};

fn entry(text: &str) -> NewEntry<'_> {
    NewEntry {
        source: "test",
        text,
        modulation: &[0.5; 6],
        key: &[],
    }
}

/// A bank of two entries, closed.
fn bank_of_two(dir: &Path) {
    let mut bank = MemoryBank::create(dir, SHAPE, "test").unwrap();
    bank.append(entry("first document")).unwrap();
    bank.append(entry("second document")).unwrap();
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("MANIFEST");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

fn corrupt_reason(err: BankError) -> String {
    match err {
        BankError::Corrupt { path, reason } => {
            assert!(path.ends_with("MANIFEST"), "names {}", path.display());
            reason
        }
        other => panic!("expected a corrupt-manifest error, got {other}"),
    }
}

#[test]
fn a_manifest_naming_a_file_outside_the_bank_touches_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("bank");
    bank_of_two(&dir);
    let victim = root.path().join("victim.bin");
    std::fs::write(&victim, vec![7u8; 4096]).unwrap();
    for name in [
        "../victim.bin".to_string(),
        victim.display().to_string(),
        "seg-000000.bin/../../victim.bin".to_string(),
    ] {
        edit_manifest(&dir, |v| {
            v["segments"][0]["file"] = Value::from(name.clone())
        });
        for open in [MemoryBank::open, MemoryBank::open_read_only] {
            let reason = corrupt_reason(open(&dir).unwrap_err());
            assert!(reason.contains("segment 0 is named"), "{reason}");
        }
        assert_eq!(std::fs::metadata(&victim).unwrap().len(), 4096, "{name}");
    }
}

/// A named edit of a manifest.
type ManifestEdit = (&'static str, Box<dyn Fn(&mut Value)>);

#[test]
fn impossible_manifests_are_errors_not_panics() {
    let cases: Vec<ManifestEdit> = vec![
        (
            "no segment",
            Box::new(|v| v["segments"] = Value::Array(vec![])),
        ),
        (
            "key width 2^62",
            Box::new(|v| v["shape"]["key_dim"] = Value::from(1u64 << 62)),
        ),
        (
            "zero width",
            Box::new(|v| v["shape"]["d_mod"] = Value::from(0)),
        ),
        (
            "overflowing shape",
            Box::new(|v| {
                v["shape"]["n_tokens"] = Value::from(u64::MAX / 2);
                v["shape"]["d_mod"] = Value::from(4);
            }),
        ),
        (
            "next id behind the entries",
            Box::new(|v| v["next_id"] = Value::from(1)),
        ),
        (
            "duplicate segment",
            Box::new(|v| {
                let seg = v["segments"][0].clone();
                v["segments"].as_array_mut().unwrap().push(seg);
            }),
        ),
    ];
    for (name, edit) in cases {
        let dir = tempfile::tempdir().unwrap();
        bank_of_two(dir.path());
        edit_manifest(dir.path(), edit);
        for open in [MemoryBank::open, MemoryBank::open_read_only] {
            let err = open(dir.path())
                .err()
                .unwrap_or_else(|| panic!("{name}: opened"));
            assert!(matches!(err, BankError::Corrupt { .. }), "{name}: {err}");
        }
    }
}

#[test]
fn records_with_repeated_ids_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    bank_of_two(dir.path());
    let seg = dir.path().join("seg-000000.bin");
    let mut bytes = std::fs::read(&seg).unwrap();
    // Record layout: magic, u32 body length, body (id first), crc32 of body.
    let first_body = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let second = 12 + first_body;
    let body_len = u32::from_le_bytes(bytes[second + 4..second + 8].try_into().unwrap()) as usize;
    let body = second + 8..second + 8 + body_len;
    bytes[body.start..body.start + 8].copy_from_slice(&0u64.to_le_bytes());
    let crc = crc32fast::hash(&bytes[body.clone()]);
    bytes[body.end..body.end + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, bytes).unwrap();
    let err = MemoryBank::open_read_only(dir.path()).unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
}

#[test]
fn readers_open_beside_the_writer_and_never_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = MemoryBank::create(dir.path(), SHAPE, "test").unwrap();
    writer.append(entry("one")).unwrap();
    writer.append(entry("two")).unwrap();
    // Readers open while the writer holds the lock, and beside each other.
    let mut reader = MemoryBank::open_read_only(dir.path()).unwrap();
    let other = MemoryBank::open_read_only(dir.path()).unwrap();
    assert!(!reader.is_writer() && writer.is_writer());
    assert_eq!((reader.len(), other.len()), (2, 2));
    assert_eq!(reader.read(1).unwrap().text, "two");
    let err = reader.append(entry("three")).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    // The writer goes on; an open reader keeps its snapshot, a new one sees more.
    writer.append(entry("three")).unwrap();
    assert_eq!(reader.len(), 2);
    assert_eq!(reader.read(1).unwrap().text, "two");
    assert_eq!(MemoryBank::open_read_only(dir.path()).unwrap().len(), 3);
    // A second writer is still refused while readers are open.
    assert!(matches!(
        MemoryBank::open(dir.path()),
        Err(BankError::Locked { .. })
    ));
}

#[test]
fn a_writer_hands_out_readers_that_keep_their_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = MemoryBank::create(dir.path(), SHAPE, "test").unwrap();
    writer.append(entry("one")).unwrap();
    let reader = writer.reader().unwrap();
    assert!(!reader.is_writer());
    writer.append(entry("two")).unwrap();
    // The reader sees what was committed when it was made, read from disk.
    assert_eq!(reader.len(), 1);
    assert_eq!(reader.read(0).unwrap().text, "one");
    assert_eq!(reader.find_text("two"), None);
    let fresh = writer.reader().unwrap();
    assert_eq!(fresh.read(1).unwrap().text, "two");
    assert_eq!(fresh.position_of(1), Some(1));
    assert_eq!(fresh.position_of(7), None);
    let mut reader = reader;
    assert!(reader.append(entry("three")).is_err());
    assert_eq!(MemoryBank::open_read_only(dir.path()).unwrap().len(), 2);
}

#[test]
fn a_reader_leaves_an_uncommitted_tail_to_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    bank_of_two(dir.path());
    let seg = dir.path().join("seg-000000.bin");
    let committed = std::fs::metadata(&seg).unwrap().len();
    // Bytes past the committed length: an append in progress, or one that never returned.
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[1, 2, 3, 4, 5]);
    std::fs::write(&seg, bytes).unwrap();
    let reader = MemoryBank::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.len(), 2);
    reader.verify().unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), committed + 5);
    drop(reader);
    let writer = MemoryBank::open(dir.path()).unwrap();
    assert_eq!(writer.len(), 2);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), committed);
}
