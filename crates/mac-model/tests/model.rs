//! The assembled model over the real MiniLM: padding invariance of the
//! amortization encoder, checkpoint round trip, and clear checkpoint errors.

use std::path::PathBuf;

use burn::tensor::Tensor;
use mac_encoder::{EncoderTokenizer, Trainable};
use mac_lm::KvLayout;
use mac_lm::LoadedLm;
use mac_model::{Checkpoint, CheckpointMeta, MacConfig, MacModel, ModelError};

fn device() -> burn::tensor::Device {
    mac_device::select("flex").unwrap()
}

fn small_config() -> MacConfig {
    MacConfig {
        n_tokens: 3,
        d_mod: 32,
        document_trainable: Trainable::TopLayers(1),
        question_trainable: Trainable::None,
        head_heads: 2,
        aggregator_blocks: 1,
        aggregator_heads: 2,
        aggregator_head_dim: 8,
        prefix_len: 1,
        expansion_hidden: 16,
        lm_token_channel_width: None,
        ..MacConfig::default()
    }
}

const LAYOUT: KvLayout = KvLayout {
    n_layers: 2,
    n_kv_heads: 2,
    head_dim: 8,
};

fn encoder_dir() -> Option<PathBuf> {
    let dir = mac_assets::default_encoder_dir();
    mac_assets::fetched_or_skip(&dir).then_some(dir)
}

fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn amortization_is_padding_invariant_and_checkpoints_round_trip() {
    let Some(enc) = encoder_dir() else { return };
    let device = device();
    let cfg = small_config();
    let model = MacModel::init(&cfg, &enc, LAYOUT, &device).unwrap();
    let tok = EncoderTokenizer::from_file(enc.join("tokenizer.json"), 64).unwrap();
    let short = "Velra Quellington was born in Port Vessa.";
    let long = "Morrion Thrimsen works for Orvane Dynamics and was awarded the Ember Prize in a long ceremony.";
    let alone = model
        .amortizer()
        .unwrap()
        .encode_texts(&tok, &[short], None, &device)
        .unwrap()
        .tokens;
    let padded = model
        .amortizer()
        .unwrap()
        .encode_texts(&tok, &[short, long], None, &device)
        .unwrap()
        .tokens
        .narrow(0, 0, 1);
    assert_eq!(alone.dims(), [1, 3, 32]);
    let d = max_diff(alone.clone(), padded);
    assert!(d < 1e-4, "padding changed the modulation by {d}");
    assert!(matches!(
        model
            .amortizer()
            .unwrap()
            .encode_texts(&tok, &["  "], None, &device),
        Err(ModelError::Input(_))
    ));

    // Parameter counts (on the autodiff device, where gradients are tracked):
    // backbones frozen except the top layer of the document encoder.
    let summary = MacModel::init(&cfg, &enc, LAYOUT, &device.clone().autodiff())
        .unwrap()
        .param_summary();
    let total = summary.last().unwrap();
    assert_eq!(total.name, "total");
    assert_eq!(
        total.total,
        summary[..summary.len() - 1]
            .iter()
            .map(|p| p.total)
            .sum::<usize>()
    );
    assert!(summary[0].trainable > 0 && summary[0].trainable < summary[0].total);
    let question_backbone = summary
        .iter()
        .find(|p| p.name == "question encoder (backbone)")
        .unwrap();
    assert_eq!(question_backbone.trainable, 0);

    // Round trip through a checkpoint gives the same modulation.
    let dir = tempfile::tempdir().unwrap();
    let meta = CheckpointMeta::new(cfg.clone(), "lm.gguf".into(), enc.clone(), LAYOUT);
    Checkpoint::save(&dir.path().join("ck"), &model, &meta).unwrap();
    let ck = Checkpoint::open(&dir.path().join("ck")).unwrap();
    assert_eq!(ck.meta, meta);
    let restored = ck.load_model(None, &device).unwrap();
    let again = restored
        .amortizer()
        .unwrap()
        .encode_texts(&tok, &[short], None, &device)
        .unwrap()
        .tokens;
    assert!(max_diff(alone, again) < 1e-6);

    // Errors name the file.
    let e = Checkpoint::open(&dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
    std::fs::write(dir.path().join("ck/mac.json"), "{ not json").unwrap();
    let e = Checkpoint::open(&dir.path().join("ck"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("mac.json") && e.contains("malformed"), "{e}");
    // A configuration that would divide by zero or allocate without bound
    // is refused, naming the file and the field.
    for (field, value) in [("aggregator_heads", 0u64), ("n_tokens", 1 << 40)] {
        let mut bad = serde_json::to_value(&meta).unwrap();
        bad["config"][field] = value.into();
        std::fs::write(dir.path().join("ck/mac.json"), bad.to_string()).unwrap();
        let e = Checkpoint::open(&dir.path().join("ck"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mac.json") && e.contains(field), "{e}");
    }

    // Parameters of another shape do not load silently.
    let other = MacConfig {
        d_mod: 48,
        ..cfg.clone()
    };
    let meta2 = CheckpointMeta::new(other, "lm.gguf".into(), enc.clone(), LAYOUT);
    let ck2 = dir.path().join("ck2");
    Checkpoint::save(&ck2, &model, &meta2).unwrap();
    let e = Checkpoint::open(&ck2)
        .unwrap()
        .load_model(None, &device)
        .unwrap_err();
    assert!(matches!(e, ModelError::Checkpoint { .. }), "{e}");
    // A truncated parameter file is reported, not a panic.
    let bpk = ck2.join("model.bpk");
    let bytes = std::fs::read(&bpk).unwrap();
    std::fs::write(&bpk, &bytes[..bytes.len() / 3]).unwrap();
    let ck3 = dir.path().join("ck3");
    Checkpoint::save(&ck3, &model, &meta).unwrap();
    std::fs::write(ck3.join("model.bpk"), &bytes[..bytes.len() / 3]).unwrap();
    let e = Checkpoint::open(&ck3)
        .unwrap()
        .load_model(None, &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.bpk"), "{e}");
}

/// The LM-token channel: the document encoder also reads the document as
/// the frozen LM embeds it. Padding invariance holds over both sequences,
/// the LM's tokens change the modulation, the channel trains, and an
/// encoder with a channel refuses to run without the LM.
#[test]
fn lm_token_channel_reads_the_lm_tokens() {
    let Some(enc) = encoder_dir() else { return };
    let lm_path = mac_assets::default_lm_path();
    if !mac_assets::fetched_or_skip(&lm_path) {
        return;
    }
    let device = device();
    let lm = LoadedLm::load(&lm_path, &device).unwrap();
    let cfg = MacConfig {
        lm_token_channel_width: Some(lm.model.hidden_width()),
        ..small_config()
    };
    let ad = device.clone().autodiff();
    let model = MacModel::init(&cfg, &enc, LAYOUT, &ad).unwrap();
    let tok = EncoderTokenizer::from_file(enc.join("tokenizer.json"), 64).unwrap();
    let short = "Velra Quellington was born in Port Vessa.";
    let long = "Morrion Thrimsen works for Orvane Dynamics and was awarded the Ember Prize in a long ceremony.";
    let e = model
        .amortizer()
        .unwrap()
        .encode_texts(&tok, &[short], None, &ad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("LM"), "{e}");

    let alone = model
        .amortizer()
        .unwrap()
        .encode_texts(&tok, &[short], Some(&lm), &ad)
        .unwrap()
        .tokens;
    let padded = model
        .amortizer()
        .unwrap()
        .encode_texts(&tok, &[short, long], Some(&lm), &ad)
        .unwrap()
        .tokens
        .narrow(0, 0, 1);
    let d = max_diff(alone.clone(), padded);
    assert!(d < 1e-4, "padding changed the modulation by {d}");

    // Same encoder input, other LM tokens: the modulation moves.
    let ids_valid = tok.encode_batch(&[short]).unwrap();
    let with = |text: &str| {
        let lm_tokens = mac_model::LmTokens::embed(&lm, &[text], 64, None, &ad).unwrap();
        model.amortizer().unwrap().forward(
            ids_valid.ids_tensor(&ad),
            ids_valid.valid_tensor(&ad),
            Some(lm_tokens),
        )
    };
    let moved = max_diff(with(short), with("Velra Quellington was born in Oldmarsh."));
    assert!(
        moved > 1e-3,
        "the LM tokens did not change the modulation ({moved})"
    );

    // The channel's projection receives a gradient.
    let grads = alone.powi_scalar(2).sum().backward();
    let ch = model.amortizer().unwrap().lm_channel.as_ref().unwrap();
    let g = ch.proj.weight.val().grad(&grads).expect("channel gradient");
    assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
}

/// The model as checkpoints before [`mac_model::MacPath`] laid it out: every
/// module a field of its own, copy mode an optional one.
#[derive(burn::module::Module, Debug)]
struct EarlierLayout {
    amortizer: mac_model::AmortizationEncoder,
    question_encoder: mac_model::AmortizationEncoder,
    aggregator: mac_aggregation::Aggregator,
    expansion: mac_aggregation::PrefixExpansion,
    copy: Option<mac_model::CopyPath>,
    answer_probe: Option<burn::module::Param<Tensor<2>>>,
}

#[test]
fn a_checkpoint_of_the_earlier_layout_loads_unchanged() {
    use burn::store::{BurnpackStore, ModuleSnapshot};
    let Some(enc) = encoder_dir() else { return };
    let device = device();
    let cfg = MacConfig {
        answer_probe_width: Some(8),
        aggregator_selector_dim: Some(4),
        ..small_config()
    };
    let model = MacModel::init(&cfg, &enc, LAYOUT, &device).unwrap();
    let paper = model.aggregation_path().unwrap().clone();
    let earlier = EarlierLayout {
        amortizer: paper.amortizer,
        question_encoder: model.question_encoder.clone(),
        aggregator: paper.aggregator,
        expansion: paper.expansion,
        copy: None,
        answer_probe: paper.answer_probe,
    };
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let meta = CheckpointMeta::new(cfg.clone(), "lm.gguf".into(), enc.clone(), LAYOUT);
    Checkpoint::save(&ck, &model, &meta).unwrap();
    let file = ck.join(mac_model::MODEL_FILE);
    std::fs::remove_file(&file).unwrap();
    let mut store = BurnpackStore::from_file(&file).auto_extension(false);
    earlier.save_into(&mut store).unwrap();
    // Every parameter comes back where the model now keeps it.
    let restored = Checkpoint::open(&ck)
        .unwrap()
        .load_model(None, &device)
        .unwrap();
    let named = |m: &MacModel| -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<(String, Vec<u8>)> = m
            .collect(None, None, false)
            .into_iter()
            .map(|t| {
                let (name, _, _, _, bytes) = t.into_parts().unwrap();
                (name, bytes.to_vec())
            })
            .collect();
        all.sort();
        all
    };
    let (a, b) = (named(&model), named(&restored));
    assert!(a
        .iter()
        .any(|(n, _)| n.starts_with("path.Aggregation.aggregator.selector.")));
    assert!(a.iter().any(|(n, _)| n == "path.Aggregation.answer_probe"));
    assert_eq!(a, b);
}
