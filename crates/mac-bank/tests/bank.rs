//! Memory bank: round trips, deduplication, bad input, corruption and crash safety.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mac_bank::{AppendOutcome, BankError, BankShape, MemoryBank, NewEntry, Precision};

const SHAPE: BankShape = BankShape {
    n_tokens: 3,
    d_mod: 4,
    key_dim: 0,
    rows_vary: false,
    precision: Precision::F32,
};

fn modulation(seed: u64) -> Vec<f32> {
    (0..SHAPE.numel())
        .map(|i| seed as f32 + i as f32 * 0.25)
        .collect()
}

fn doc(i: u64) -> String {
    format!("Document number {i}: the quick brown fox, version {i}.")
}

#[test]
fn append_reopen_read_and_chunks() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut bank = MemoryBank::create(dir.path(), SHAPE, "test").unwrap();
        for i in 0..10 {
            let m = modulation(i);
            let out = bank
                .append(NewEntry {
                    source: &format!("src{i}"),
                    text: &doc(i),
                    modulation: &m,
                    key: &[],
                })
                .unwrap();
            assert_eq!(out, AppendOutcome::Stored(i));
        }
    }
    let bank = MemoryBank::open(dir.path()).unwrap();
    assert_eq!(bank.len(), 10);
    assert_eq!(bank.producer(), "test");
    let e = bank.read(7).unwrap();
    assert_eq!(
        (e.id, e.source.as_str(), e.text.as_str()),
        (7, "src7", doc(7).as_str())
    );
    assert_eq!(e.modulation, modulation(7));
    let chunks: Vec<_> = bank.chunks(4).map(|c| c.unwrap()).collect();
    assert_eq!(
        chunks.iter().map(|c| c.ids.len()).collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
    assert_eq!(chunks[2].start, 8);
    assert_eq!(&chunks[1].data[..SHAPE.numel()], &modulation(4)[..]);
    assert_eq!(chunks[1].texts, (4..8).map(doc).collect::<Vec<_>>());
    assert_eq!(bank.verify().unwrap().entries, 10);
}

#[test]
fn retrieval_keys_round_trip_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let shape = BankShape {
        key_dim: 2,
        ..SHAPE
    };
    let key = |i: u64| vec![i as f32, -(i as f32) / 8.0];
    {
        let mut bank = MemoryBank::create(dir.path(), shape, "test").unwrap();
        for i in 0..5 {
            let (m, k) = (modulation(i), key(i));
            bank.append(NewEntry {
                source: "s",
                text: &doc(i),
                modulation: &m,
                key: &k,
            })
            .unwrap();
        }
        let m = modulation(9);
        let wrong = bank.append(NewEntry {
            source: "nokey.txt",
            text: "no key",
            modulation: &m,
            key: &[],
        });
        assert!(
            matches!(&wrong, Err(BankError::Invalid(e)) if e.contains("nokey.txt") && e.contains("retrieval key")),
            "{wrong:?}"
        );
        let nan = bank.append(NewEntry {
            source: "nan.txt",
            text: "nan key",
            modulation: &m,
            key: &[0.0, f32::NAN],
        });
        assert!(matches!(&nan, Err(BankError::Invalid(e)) if e.contains("nan.txt")));
    }
    let bank = MemoryBank::open(dir.path()).unwrap();
    assert_eq!((bank.len(), bank.shape()), (5, shape));
    let e = bank.read(3).unwrap();
    assert_eq!((e.modulation, e.key), (modulation(3), key(3)));
    let chunk = bank.modulations(1, 3).unwrap();
    assert_eq!(chunk.data.len(), 3 * SHAPE.numel());
    assert_eq!(&chunk.data[..SHAPE.numel()], &modulation(1)[..]);
    assert_eq!(chunk.keys, [key(1), key(2), key(3)].concat());
    assert_eq!(bank.verify().unwrap().entries, 5);
}

#[test]
fn a_format_1_bank_without_keys_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut bank = MemoryBank::create(dir.path(), SHAPE, "test").unwrap();
        let m = modulation(1);
        bank.append(NewEntry {
            source: "s",
            text: "old",
            modulation: &m,
            key: &[],
        })
        .unwrap();
    }
    // What format 1 wrote: version 1 and no key width in the shape.
    let path = dir.path().join("MANIFEST");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["version"] = 1.into();
    manifest["shape"].as_object_mut().unwrap().remove("key_dim");
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let bank = MemoryBank::open(dir.path()).unwrap();
    assert_eq!(bank.shape(), SHAPE);
    let e = bank.read(0).unwrap();
    assert_eq!((e.modulation, e.key), (modulation(1), vec![]));
}

#[test]
fn duplicates_are_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = MemoryBank::create(dir.path(), SHAPE, "").unwrap();
    let m = modulation(1);
    let a = NewEntry {
        source: "a.txt",
        text: "same text",
        modulation: &m,
        key: &[],
    };
    let b = NewEntry {
        source: "b.txt",
        text: "same text",
        modulation: &m,
        key: &[],
    };
    assert_eq!(bank.append(a).unwrap(), AppendOutcome::Stored(0));
    let size = bank.size_bytes();
    assert_eq!(bank.append(b).unwrap(), AppendOutcome::Duplicate(0));
    assert_eq!(bank.size_bytes(), size);
    // Within one batch too.
    let outs = bank
        .append_batch(&[
            NewEntry {
                source: "c",
                text: "other",
                modulation: &m,
                key: &[],
            },
            NewEntry {
                source: "d",
                text: "other",
                modulation: &m,
                key: &[],
            },
        ])
        .unwrap();
    assert_eq!(
        outs,
        vec![AppendOutcome::Stored(1), AppendOutcome::Duplicate(1)]
    );
    drop(bank);
    let bank = MemoryBank::open(dir.path()).unwrap();
    assert_eq!(bank.find_text("other"), Some(1));
    assert_eq!(bank.len(), 2);
}

#[test]
fn bad_input_is_rejected_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = MemoryBank::create(dir.path(), SHAPE, "").unwrap();
    let good = modulation(0);
    bank.append(NewEntry {
        source: "ok",
        text: "kept",
        modulation: &good,
        key: &[],
    })
    .unwrap();
    let empty = bank.append(NewEntry {
        source: "empty.txt",
        text: "  \n",
        modulation: &good,
        key: &[],
    });
    assert!(
        matches!(&empty, Err(BankError::Invalid(m)) if m.contains("empty.txt") && m.contains("empty"))
    );
    let short = bank.append(NewEntry {
        source: "s",
        text: "x",
        modulation: &good[..5],
        key: &[],
    });
    assert!(matches!(&short, Err(BankError::Invalid(m)) if m.contains("5 values")));
    let mut nan = good.clone();
    nan[2] = f32::NAN;
    assert!(bank
        .append(NewEntry {
            source: "n",
            text: "y",
            modulation: &nan,
            key: &[],
        })
        .is_err());
    // A batch with one bad entry writes nothing.
    let res = bank.append_batch(&[
        NewEntry {
            source: "a",
            text: "fine",
            modulation: &good,
            key: &[],
        },
        NewEntry {
            source: "b",
            text: "",
            modulation: &good,
            key: &[],
        },
    ]);
    assert!(res.is_err());
    drop(bank);
    let bank = MemoryBank::open(dir.path()).unwrap();
    assert_eq!(bank.len(), 1);
    assert_eq!(bank.read(0).unwrap().text, "kept");
}

#[test]
fn second_writer_is_refused_and_missing_bank_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let _bank = MemoryBank::create(dir.path(), SHAPE, "").unwrap();
    assert!(matches!(
        MemoryBank::open(dir.path()),
        Err(BankError::Locked { .. })
    ));
    let empty = tempfile::tempdir().unwrap();
    let err = MemoryBank::open(empty.path()).unwrap_err();
    assert!(err.to_string().contains("no memory bank"), "{err}");
    assert!(matches!(
        MemoryBank::open_or_create(dir.path().join("sub"), SHAPE, "").map(|b| b.len()),
        Ok(0)
    ));
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn flipped_byte_is_reported_as_corruption_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut bank = MemoryBank::create(dir.path(), SHAPE, "").unwrap();
        for i in 0..5 {
            let m = modulation(i);
            bank.append(NewEntry {
                source: "s",
                text: &doc(i),
                modulation: &m,
                key: &[],
            })
            .unwrap();
        }
    }
    let seg = dir.path().join("seg-000000.bin");
    let len = std::fs::metadata(&seg).unwrap().len();
    // A byte inside the last record's modulation: found by verify and by reading.
    flip_byte(&seg, len - 10);
    let bank = MemoryBank::open(dir.path()).unwrap();
    let err = bank.verify().unwrap_err();
    assert!(matches!(err, BankError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("seg-000000.bin") && err.to_string().contains("checksum"),
        "{err}"
    );
    assert!(bank.chunks(10).any(|c| c.is_err()));
    assert!(bank.read(0).is_ok(), "intact entries stay readable");
    drop(bank);
    // A byte in a record header: found at open.
    flip_byte(&seg, len - 10);
    flip_byte(&seg, 1);
    let err = MemoryBank::open(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("seg-000000.bin") && err.to_string().contains("magic"),
        "{err}"
    );
    // A corrupt manifest.
    std::fs::write(dir.path().join("MANIFEST"), b"{ not json").unwrap();
    let err = MemoryBank::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("MANIFEST"), "{err}");
}

/// The child side of the crash test: appends forever, printing each
/// acknowledged id. Runs only when the parent sets MAC_BANK_CHILD_DIR.
#[test]
#[ignore = "helper process for crash_safety_under_sigkill"]
fn crash_child_appender() {
    let Ok(dir) = std::env::var("MAC_BANK_CHILD_DIR") else {
        return;
    };
    let mut bank = MemoryBank::open_or_create(&dir, SHAPE, "crash").unwrap();
    let mut i = bank.len() as u64;
    loop {
        let m = modulation(i);
        let text = doc(i);
        let out = bank
            .append(NewEntry {
                source: "child",
                text: &text,
                modulation: &m,
                key: &[],
            })
            .unwrap();
        if let AppendOutcome::Stored(id) = out {
            println!("ACK {id} {i}");
        }
        i += 1;
    }
}

#[test]
fn crash_safety_under_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for round in 0..6 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_appender",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MAC_BANK_CHILD_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let want = 5 + (seed % 40) as usize;
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parts: Vec<&str> = line.split_whitespace().collect();
                if parts.len() == 3 && parts[0] == "ACK" {
                    got.push((parts[1].parse().unwrap(), parts[2].parse().unwrap()));
                }
            }
            got
        });
        // Let it run for a while, then kill it mid-append at an arbitrary point.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            std::thread::sleep(Duration::from_millis(5 + seed % 20));
            if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                break;
            }
            // Kill after a random amount of progress.
            if round_progress(dir.path()) >= acked.len() + want {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let got = reader.join().unwrap();
        assert!(
            !got.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        eprintln!(
            "round {round}: {} appends acknowledged before SIGKILL",
            got.len()
        );
        acked.extend(got);
        // Every acknowledged append is present and intact; nothing partial is visible.
        let bank = MemoryBank::open(dir.path()).unwrap();
        bank.verify().unwrap();
        assert!(
            bank.len() >= acked.len(),
            "round {round}: {} entries < {} acknowledged",
            bank.len(),
            acked.len()
        );
        for &(id, i) in &acked {
            let e = bank.read(id as usize).unwrap();
            assert_eq!((e.id, e.text.as_str()), (id, doc(i).as_str()));
            assert_eq!(e.modulation, modulation(i));
        }
        // The next round continues from whatever was committed.
        acked = (0..bank.len() as u64).map(|id| (id, id)).collect();
    }
}

fn round_progress(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("MANIFEST"))
        .ok()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
        .and_then(|v| v["next_id"].as_u64())
        .unwrap_or(0) as usize
}
