//! Mutation tests of the encoder backbones' `config.json`: the tiny BERT
//! and T5 fixtures' configurations cut at every byte,
//! flipped, with numbers made huge, zero or negative and random edits
//! (`MAC_FUZZ_SECONDS` runs them longer: `cargo xtask fuzz`). Loading the
//! backbone returns an error naming `config.json` (or the model directory,
//! whose weights no longer match), or a model — never a panic or an allocation beyond
//! a bound proportional to the files' size.

mod common;

use std::fs;

use common::{device, fixtures};
use mac_encoder::{EncoderBackbone, Trainable};
use mac_fuzz::{Budget, Campaign, Kind};

#[global_allocator]
static ALLOC: mac_fuzz::TrackingAllocator = mac_fuzz::TrackingAllocator;

fn campaign(fixture: &str) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join(fixture);
    fs::create_dir(&model).unwrap();
    for entry in fs::read_dir(fixtures().join(fixture)).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let seed = fs::read(model.join("config.json")).unwrap();
    let device = device();
    Campaign::new(format!("{fixture} config.json"), &seed, Kind::Text)
        .header_len(0)
        .max_per_family(300)
        .budget(Budget::from_env(200))
        // A configuration that no longer matches the weights is named by
        // the model directory the weights were read from.
        .run(&["config.json", fixture], |bytes| {
            fs::write(model.join("config.json"), bytes).unwrap();
            EncoderBackbone::load(&model, &device, Trainable::None).map_err(|e| e.to_string())?;
            Ok(())
        })
        .assert_passed();
}

#[test]
fn bert_config() {
    campaign("tiny-bert");
}

#[test]
fn t5_config() {
    campaign("tiny-t5-gated");
}
