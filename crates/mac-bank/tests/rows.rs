//! A bank whose entries hold varying rows (one per token of a document):
//! stored, read one by one and in chunks, verified, reopened beside a
//! reader and repaired like a bank of fixed rows; written in format 3
//! while banks of fixed rows keep format 2.

use std::fs;

use mac_bank::{repair, BankShape, MemoryBank, NewEntry, Precision};

const VARYING: BankShape = BankShape {
    n_tokens: 5,
    d_mod: 2,
    key_dim: 1,
    rows_vary: true,
    precision: Precision::F32,
};

/// An entry of `rows` rows whose values say which entry and row they are.
fn rows(entry: usize, rows: usize) -> Vec<f32> {
    (0..rows * 2).map(|j| (entry * 100 + j) as f32).collect()
}

fn text(i: usize) -> String {
    format!("document {i} of {} tokens", [1, 3, 5, 2][i % 4])
}

const ROWS: [usize; 4] = [1, 3, 5, 2];

fn fill(bank: &mut MemoryBank) {
    for (i, &r) in ROWS.iter().enumerate() {
        let m = rows(i, r);
        let doc = NewEntry {
            source: "test",
            text: &text(i),
            modulation: &m,
            key: &[i as f32],
        };
        bank.append(doc).unwrap();
    }
}

#[test]
fn entries_of_varying_rows_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = MemoryBank::create(dir.path(), VARYING, "test").unwrap();
    fill(&mut bank);
    // Outside 1..=5 rows, or not whole rows: refused, nothing written.
    for bad in [0, 12, 3] {
        let m = vec![1.0; bad];
        let err = bank
            .append(NewEntry {
                source: "bad",
                text: &format!("a document of {bad} values"),
                modulation: &m,
                key: &[0.0],
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 to 5 rows of 2"), "{err}");
    }
    assert_eq!(bank.len(), 4);
    drop(bank);

    let manifest = fs::read_to_string(dir.path().join("MANIFEST")).unwrap();
    assert!(
        manifest.contains("\"version\": 3") || manifest.contains("\"version\":3"),
        "{manifest}"
    );
    for reader in [
        MemoryBank::open_read_only(dir.path()).unwrap(),
        MemoryBank::open(dir.path()).unwrap(),
    ] {
        assert_eq!(reader.shape(), VARYING);
        for (i, &r) in ROWS.iter().enumerate() {
            let e = reader.read(i).unwrap();
            assert_eq!(e.modulation, rows(i, r));
            assert_eq!(e.text, text(i));
            assert_eq!(e.key, vec![i as f32]);
        }
        let chunks: Vec<_> = reader.chunks(3).map(Result::unwrap).collect();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].rows, vec![1, 3, 5]);
        assert_eq!(chunks[1].rows, vec![2]);
        let expected: Vec<f32> = (0..3).flat_map(|i| rows(i, ROWS[i])).collect();
        assert_eq!(chunks[0].data, expected);
        assert_eq!(chunks[0].keys, vec![0.0, 1.0, 2.0]);
        assert_eq!(reader.verify().unwrap().entries, 4);
    }
}

#[test]
fn fixed_rows_keep_their_format_and_the_two_kinds_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let fixed = BankShape {
        rows_vary: false,
        precision: Precision::F32,
        ..VARYING
    };
    drop(MemoryBank::create(dir.path().join("fixed"), fixed, "test").unwrap());
    let manifest = fs::read_to_string(dir.path().join("fixed/MANIFEST")).unwrap();
    assert!(!manifest.contains("rows_vary"), "{manifest}");
    assert!(
        manifest.contains("\"version\": 2") || manifest.contains("\"version\":2"),
        "{manifest}"
    );

    // A model of fixed rows does not open a bank of varying rows, nor back.
    let varying = dir.path().join("varying");
    drop(MemoryBank::create(&varying, VARYING, "test").unwrap());
    let err = MemoryBank::open_or_create(&varying, fixed, "test")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("varying") || err.contains("rows_vary"),
        "{err}"
    );
    let err = MemoryBank::open_or_create(dir.path().join("fixed"), VARYING, "test")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows_vary"), "{err}");

    // A MANIFEST of format 2 claiming varying rows is refused, naming it.
    let path = varying.join("MANIFEST");
    let text = fs::read_to_string(&path).unwrap();
    let downgraded = text
        .replace("\"version\": 3", "\"version\": 2")
        .replace("\"version\":3", "\"version\":2");
    assert_ne!(downgraded, text);
    fs::write(&path, downgraded).unwrap();
    let err = MemoryBank::open_read_only(&varying)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("MANIFEST") && err.contains("format 3"),
        "{err}"
    );
}

#[test]
fn a_bank_of_varying_rows_is_repaired_with_or_without_its_manifest() {
    let root = tempfile::tempdir().unwrap();
    let damaged = root.path().join("bank");
    let mut bank = MemoryBank::create(&damaged, VARYING, "test").unwrap();
    fill(&mut bank);
    drop(bank);
    for lose_manifest in [false, true] {
        if lose_manifest {
            fs::remove_file(damaged.join("MANIFEST")).unwrap();
        }
        let out = root.path().join(format!("repaired-{lose_manifest}"));
        let report = repair(&damaged, &out).unwrap();
        assert_eq!(report.manifest_used, !lose_manifest);
        assert_eq!(report.copied.len(), 4, "{:?}", report.dropped);
        // Without the MANIFEST the records' own rows say the rows vary,
        // up to the most any entry holds.
        assert!(report.shape.rows_vary);
        assert_eq!(report.shape.n_tokens, 5);
        let repaired = MemoryBank::open_read_only(&out).unwrap();
        for (i, &r) in ROWS.iter().enumerate() {
            assert_eq!(repaired.read(i).unwrap().modulation, rows(i, r));
        }
    }
}
