//! The fine-tuning baseline changes the real SmolLM2 and lowers the loss on
//! the document it saw.

use mac_finetune::{FinetuneConfig, FinetuneKind, OnlineFinetuner};

#[test]
fn finetuning_lowers_the_loss_on_the_seen_document() {
    let path = mac_assets::default_lm_path();
    if !mac_assets::fetched_or_skip(&path) {
        return;
    }
    let device = mac_device::select("flex").unwrap();
    let doc = "Velra Quellington was born in Port Vessa on 3 May 1961. Velra Quellington works for Orvane Dynamics.";
    let other = "The printing press spread quickly across Europe in the fifteenth century.";
    for kind in [FinetuneKind::Uniform, FinetuneKind::SalientSpans] {
        let cfg = FinetuneConfig {
            kind,
            learning_rate: 1e-4,
            steps_per_document: 3,
            max_tokens: 128,
        };
        let mut ft = OnlineFinetuner::load(&path, &device, cfg).unwrap();
        let before = ft.loss(doc).unwrap();
        let other_before = ft.loss(other).unwrap();
        let steps = ft.adapt(doc).unwrap();
        let after = ft.loss(doc).unwrap();
        eprintln!("{}: seen doc {before:.3} -> {after:.3} (steps {steps:?}); other doc {other_before:.3} -> {:.3}", kind.name(), ft.loss(other).unwrap());
        assert!((steps[0] - before).abs() < 1e-3 * before.max(1.0));
        assert!(after < 0.8 * before, "{}: {before} -> {after}", kind.name());
        // The weights changed: another text's loss moved too.
        assert!((ft.loss(other).unwrap() - other_before).abs() > 1e-4);
    }
}
