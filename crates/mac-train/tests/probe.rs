//! Diagnostic (ignored): how much do the documents move the prefix?
//! `MAC_PROBE_CKPT=runs/x/checkpoints/best cargo test ... --test probe -- --ignored --nocapture`

use mac_model::MacRuntime;

#[test]
#[ignore]
fn document_sensitivity_of_the_prefix() {
    let Some(dir) = std::env::var_os("MAC_PROBE_CKPT") else {
        return;
    };
    let device = mac_device::select("flex").unwrap();
    let rt = MacRuntime::from_checkpoint(std::path::Path::new(&dir), None, None, &device).unwrap();
    let docs = [
        "Prako Thrimez was born in Wyncrest. Prako Thrimez works for Castellan Works. Prako Thrimez specializes in oceanography.",
        "Dela Morn was born in Velmora. Dela Morn works for Kite Aviation. Dela Morn specializes in glaciology.",
        "Ivo Sark is a native of Nalstra. Ivo Sark is employed by Brightwater Mills. Ivo Sark specializes in botany.",
    ];
    let enc = rt.encode_documents(&docs).unwrap().tokens; // [3, n, d]
    let [_, n, d] = enc.dims();
    let rows = MacRuntime::modulation_rows(enc.clone()).unwrap();
    let diff = |a: &[f32], b: &[f32]| -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt()
    };
    let norm = |a: &[f32]| a.iter().map(|x| x * x).sum::<f32>().sqrt();
    eprintln!(
        "modulation norm {:.3}, doc0-doc1 {:.3}, doc0-doc2 {:.3}",
        norm(&rows[0]),
        diff(&rows[0], &rows[1]),
        diff(&rows[0], &rows[2])
    );
    let q = rt
        .encode_questions(&["Which city is Prako Thrimez a native of?"])
        .unwrap();
    let prefix_of = |i: usize| {
        let mem = enc.clone().narrow(0, i, 1).reshape([1, n, d]);
        let (p, _) = rt
            .model
            .prefix_from_memory(&rt.lm.model, q.clone(), mem)
            .unwrap();
        p.layers
            .iter()
            .flat_map(|(k, v)| {
                let mut a = k.clone().try_to_vec_as::<f32>().unwrap();
                a.extend(v.clone().try_to_vec_as::<f32>().unwrap());
                a
            })
            .collect::<Vec<f32>>()
    };
    let (p0, p1, p2) = (prefix_of(0), prefix_of(1), prefix_of(2));
    eprintln!(
        "prefix norm {:.3}, doc0-doc1 {:.4}, doc0-doc2 {:.4}",
        norm(&p0),
        diff(&p0, &p1),
        diff(&p0, &p2)
    );
}

/// Diagnostic (ignored): the validation of a run's last checkpoint,
/// including the own-document / other-document losses that separate what
/// the modulations carry from what the aggregator retrieves.
/// `MAC_PROBE_RUN=runs/x cargo test ... --test probe -- --ignored --nocapture`
#[test]
#[ignore]
fn validation_of_a_run() {
    let Some(dir) = std::env::var_os("MAC_PROBE_RUN") else {
        return;
    };
    let device = mac_device::select("flex").unwrap();
    let trainer = mac_train::Trainer::resume(std::path::Path::new(&dir), &device).unwrap();
    eprintln!("{}", trainer.validate().unwrap());
}
