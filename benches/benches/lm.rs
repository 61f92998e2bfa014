//! Prefill (128 tokens), single-token decode and a 64-token greedy
//! generation of the frozen base LM
//! (SmolLM2-135M-Instruct, fetched by `cargo xtask fetch`) on the CPU.
//! `cargo xtask bench lm` runs this and the PyTorch reference
//! (benches/reference/lm_speed.py) on the same weights and prints the ratio.
//! Decode steps read the file's quantized blocks, as tensor operations
//! (`decode_1_after_128`) or over host buffers as generation runs them
//! (`_host_buffers`; `generate_64_after_128_tensor_steps` is a generation
//! without them); `decode_1_after_128_f32_weights`
//! is the same step on the weights dequantised to f32, and the `_q8_activations`
//! ones keep the activations in eight bits for integer dot products with the
//! blocks (as llama.cpp does), the `_q16_activations` ones in sixteen.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use mac_kernels::quantized::Activations;
use mac_lm::{BaseLm, GenerateOptions, HostDecoder, KvCache, TokenBatch};

const PROMPT_TOKENS: usize = 128;
const GENERATED_TOKENS: usize = 64;

fn bench(c: &mut Criterion) {
    let Some((_, lm)) = mac_benches::fetched_lm() else {
        return;
    };
    let model = &lm.model;
    // A fixed 128-token prompt: the ids of a repeated sentence.
    let mut ids = lm
        .tokenizer
        .encode(&"The history of the printing press begins in Mainz. ".repeat(20))
        .unwrap();
    ids.truncate(PROMPT_TOKENS);
    let prompt = TokenBatch::single(ids.clone()).unwrap();
    let mut g = c.benchmark_group("smollm2_135m");
    g.sample_size(10);
    g.bench_function("prefill_128", |b| {
        b.iter(|| {
            let h = model
                .forward_hidden(&prompt, None, Some(&mut KvCache::new()))
                .unwrap();
            let last = h.narrow(1, PROMPT_TOKENS - 1, 1);
            model.logits(last).argmax(2).into_data()
        })
    });
    let mut warm = KvCache::new();
    model
        .forward_hidden(&prompt, None, Some(&mut warm))
        .unwrap();
    let step = TokenBatch::single(vec![42]).unwrap();
    // One decode step after the prompt's cache (the cache cloned outside the timing).
    let decode = |b: &mut criterion::Bencher, model: &BaseLm| {
        b.iter_batched(
            || warm.clone(),
            |mut cache| {
                let h = model.forward_hidden(&step, None, Some(&mut cache)).unwrap();
                model.logits(h).argmax(2).into_data()
            },
            BatchSize::SmallInput,
        )
    };
    g.bench_function("decode_1_after_128", |b| decode(b, model));
    // The same step over host buffers (the cache copied out of its
    // tensors outside the timing), as generation runs it.
    let host_step = |b: &mut criterion::Bencher, model: &BaseLm| {
        let BaseLm::Llama(llama) = model else {
            panic!("SmolLM2 is a Llama");
        };
        b.iter_batched(
            || HostDecoder::start(llama, None, &warm).unwrap().unwrap(),
            |mut decoder| decoder.step(&step).unwrap().argmax(2).into_data(),
            BatchSize::SmallInput,
        )
    };
    g.bench_function("decode_1_after_128_host_buffers", |b| host_step(b, model));
    // Greedy generation of 64 tokens after the prompt (prefill included),
    // never stopping at EOS: tokens per second as a user waits for them.
    let generation = GenerateOptions {
        max_new_tokens: GENERATED_TOKENS,
        stop_at_eos: false,
        ..GenerateOptions::default()
    };
    let generate = |model: &BaseLm| {
        let out = model
            .generate(
                std::slice::from_ref(&ids),
                None,
                lm.tokenizer.pad_id,
                lm.tokenizer.eos_id,
                generation,
            )
            .unwrap();
        assert_eq!(out[0].len(), GENERATED_TOKENS);
    };
    g.bench_function("generate_64_after_128", |b| b.iter(|| generate(model)));
    // The same generation with every step as tensor operations.
    let mut tensor_steps = model.clone();
    tensor_steps.set_host_decode(false);
    g.bench_function("generate_64_after_128_tensor_steps", |b| {
        b.iter(|| generate(&tensor_steps))
    });
    // The same step on the weights dequantised to f32 (the path every
    // decode took before the file's blocks were kept).
    let mut f32_model = model.clone();
    f32_model.set_quantized_decode(false);
    g.bench_function("decode_1_after_128_f32_weights", |b| decode(b, &f32_model));
    // The same step and generation with the activations kept in eight
    // bits for integer dot products with the blocks, as llama.cpp does.
    let mut q8_model = model.clone();
    q8_model.set_decode_activations(Activations::Q8);
    g.bench_function("decode_1_after_128_q8_activations", |b| {
        decode(b, &q8_model)
    });
    g.bench_function("generate_64_after_128_q8_activations", |b| {
        b.iter(|| generate(&q8_model))
    });
    // Sixteen-bit activations: the step over host buffers and the generation.
    let mut q16_model = model.clone();
    q16_model.set_decode_activations(Activations::Q16);
    g.bench_function("decode_1_after_128_host_buffers_q16_activations", |b| {
        host_step(b, &q16_model)
    });
    g.bench_function("generate_64_after_128_q16_activations", |b| {
        b.iter(|| generate(&q16_model))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
