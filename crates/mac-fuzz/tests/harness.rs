//! The harness finds what it is for: a parser that panics on some inputs,
//! one that sizes an allocation by a length read from its input, and one
//! whose errors do not name the file; a careful parser passes.

use mac_fuzz::{Budget, Campaign, Kind};

#[global_allocator]
static ALLOC: mac_fuzz::TrackingAllocator = mac_fuzz::TrackingAllocator;

/// A format: 8-byte magic, a u32 count, then `count` bytes.
fn seed() -> Vec<u8> {
    let mut b = b"TOYFMT01".to_vec();
    b.extend_from_slice(&5u32.to_le_bytes());
    b.extend_from_slice(b"hello");
    b
}

fn careful(bytes: &[u8]) -> Result<(), String> {
    let err = |what: &str| Err(format!("toy.bin: {what}"));
    if bytes.len() < 12 || &bytes[..8] != b"TOYFMT01" {
        return err("not a toy file");
    }
    let n = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    match bytes.get(12..).filter(|rest| rest.len() == n) {
        Some(rest) => {
            let copy = rest.to_vec();
            std::hint::black_box(copy);
            Ok(())
        }
        None => err("length does not match"),
    }
}

#[test]
fn a_careful_parser_passes() {
    let seed = seed();
    let report = Campaign::new("careful", &seed, Kind::Binary)
        .budget(Budget::Cases(300))
        .run(&["toy.bin"], careful);
    report.assert_passed();
    assert!(report.deterministic > 2 * seed.len());
    assert_eq!(report.random, 300);
    assert!(report.accepted >= 1);
}

#[test]
fn panics_are_caught_and_counted() {
    let seed = seed();
    let report = Campaign::new("panicky", &seed, Kind::Binary)
        .budget(Budget::Cases(50))
        .run(&["toy.bin"], |b| {
            // Indexes by the count without checking it.
            let n = u32::from_le_bytes(b.get(8..12).ok_or("toy.bin: short")?.try_into().unwrap());
            std::hint::black_box(b[12 + n as usize - 1]);
            Ok(())
        });
    assert!(report.panics > 0, "{}", report.summary());
    assert!(!report.passed());
    assert!(report.failures[0].problem.contains("panicked"));
}

#[test]
fn allocations_sized_by_the_input_are_caught() {
    let seed = seed();
    let report = Campaign::new("trusting", &seed, Kind::Binary)
        .budget(Budget::Cases(0))
        .allocation_bound(1 << 20, 64)
        .run(&["toy.bin"], |b| {
            let Some(n) = b.get(8..12) else {
                return Err("toy.bin: short".into());
            };
            let n = u32::from_le_bytes(n.try_into().unwrap()) as usize;
            // Trusts the count with an allocation (capped so the test machine survives).
            let v: Vec<u8> = Vec::with_capacity(n.min(1 << 28));
            std::hint::black_box(v);
            Ok(())
        });
    assert!(report.oversized > 0, "{}", report.summary());
    assert!(report.largest_allocation >= 1 << 28);
}

#[test]
fn errors_that_do_not_name_the_file_are_counted() {
    let seed = seed();
    let report = Campaign::new("anonymous", &seed, Kind::Binary)
        .budget(Budget::Cases(0))
        .run(&["toy.bin"], |b| {
            careful(b).map_err(|e| e.replace("toy.bin: ", "bad input: "))
        });
    assert!(
        report.unnamed > 0 && report.panics == 0,
        "{}",
        report.summary()
    );
}
