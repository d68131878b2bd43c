//! A tour of the library API, and the Rust half of the transformers round-trip check:
//! load a checkpoint directory, forward token ids to logits, compute the loss and the
//! gradients (addressed by their HF names), take an AdamW step, save a directory that
//! `GPT2LMHeadModel.from_pretrained` loads, and reload it.
//!
//! ```text
//! cargo run --release --example save_for_transformers -- [MODEL_DIR] [OUT_DIR]
//! ```
//! MODEL_DIR defaults to the golden test model `tests/data/golden/a/model`. Besides the
//! checkpoint, OUT_DIR gets `rust_logits.safetensors` (the logits Rust computes with the
//! saved weights) and `rust_tokens.json` (a tokenizer encoding), which
//! `tools/golden/gen_golden.py --check-saved` compares against transformers; and `OUT_DIR/grn/`,
//! the same model with a causal GRN (non-zero γ, β) in front of the lm_head and its logits.

use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::checkpoint::{load_model, save_model};
use gepa_dapo_grn::model::grn::GrnConfig;
use gepa_dapo_grn::model::mean_weights;
use gepa_dapo_grn::optim::{AdamW, AdamWConfig};
use gepa_dapo_grn::tokenizer::Tokenizer;
use safetensors::tensor::{Dtype, TensorView};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model_dir = PathBuf::from(args.next().unwrap_or_else(|| "tests/data/golden/a/model".into()));
    let out_dir = PathBuf::from(args.next().unwrap_or_else(|| "runs/save_for_transformers".into()));

    // Load: config.json + model.safetensors (HF names, f32/f16/bf16).
    let mut model = load_model(&model_dir, CpuBackend::new(None))?;
    let v = model.config().vocab_size as u32;
    println!("loaded {} ({} parameters)", model_dir.display(), model.num_params());

    // Forward: token ids (B,T) to logits (B,T,V).
    let (b, t) = (2, 8);
    let ids: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 7 + 3) % v).collect();
    model.forward(&ids, b, t)?;
    let logits = model.logits().expect("forward ran");
    println!("logits[0, 0, :4] = {:?}", &logits[..4]);

    // Loss and gradients: next-token targets, mean over every position.
    let targets: Vec<u32> = ids.iter().map(|&i| (i + 1) % v).collect();
    let weights = mean_weights(&vec![true; b * t]);
    model.zero_grad();
    let loss = model.forward_backward(&ids, &targets, &weights, b, t)?;
    let g = model.grad("transformer.h.0.attn.c_attn.weight").expect("gradients exist after backward");
    println!("loss {loss:.5}; |grad h.0.attn.c_attn.weight|_inf = {:.3e}", g.iter().fold(0f32, |m, x| m.max(x.abs())));

    // One optimizer step (clip the global norm at 1.0).
    let mut opt = AdamW::new(&model, AdamWConfig::default());
    let info = opt.step(&mut model, 1e-2, Some(1.0))?;
    let after = model.loss(&ids, &targets, &weights, b, t)?;
    println!("AdamW step: grad norm {:.4}, loss {loss:.5} -> {after:.5}", info.grad_norm);

    // Save (atomically) with a built-in character-level tokenizer, then reload.
    let tok = Tokenizer::default_char();
    save_model(&out_dir, &model, Some(&tok))?;
    let mut reloaded = load_model(&out_dir, CpuBackend::new(None))?;
    reloaded.forward(&ids, b, t)?;
    let logits = reloaded.logits().expect("forward ran");
    assert_eq!(reloaded.to_host(), model.to_host(), "save/load round-trips exactly");
    println!("saved and reloaded {}", out_dir.display());

    // Evidence for the Python side of the round-trip check.
    let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let v = v as usize;
    let tensors = vec![
        ("input_ids", TensorView::new(Dtype::I64, vec![b, t], bytemuck::cast_slice(&ids64))?),
        ("logits", TensorView::new(Dtype::F32, vec![b, t, v], bytemuck::cast_slice(&logits))?),
    ];
    safetensors::serialize_to_file(tensors, &None, &out_dir.join("rust_logits.safetensors"))?;

    // The same model with a policy GRN whose γ, β are non-zero: saved as `grn.gamma` /
    // `grn.beta` beside the transformer's weights, enabled by `grn` in config.json.
    model.add_policy_grn(GrnConfig { enabled: true, ..GrnConfig::default() })?;
    let c = model.config().n_embd;
    let gamma: Vec<f32> = (0..c).map(|j| 0.8 * (j as f32 * 0.37).sin()).collect();
    let beta: Vec<f32> = (0..c).map(|j| 0.2 * (j as f32 * 0.61).cos()).collect();
    model.set_param("grn.gamma", &gamma)?;
    model.set_param("grn.beta", &beta)?;
    let grn_dir = out_dir.join("grn");
    save_model(&grn_dir, &model, Some(&tok))?;
    let mut reloaded = load_model(&grn_dir, CpuBackend::new(None))?;
    assert_eq!(reloaded.to_host(), model.to_host(), "GRN save/load round-trips exactly");
    reloaded.forward(&ids, b, t)?;
    let grn_logits = reloaded.logits().expect("forward ran");
    let tensors = vec![
        ("input_ids", TensorView::new(Dtype::I64, vec![b, t], bytemuck::cast_slice(&ids64))?),
        ("logits", TensorView::new(Dtype::F32, vec![b, t, v], bytemuck::cast_slice(&grn_logits))?),
    ];
    safetensors::serialize_to_file(tensors, &None, &grn_dir.join("rust_logits.safetensors"))?;
    println!("saved {} (with a causal GRN in front of the lm_head)", grn_dir.display());

    let text = "12+34=46\nshow work: 12 + 34 = 46";
    let enc = serde_json::json!({ "text": text, "ids": tok.encode(text)? });
    std::fs::write(out_dir.join("rust_tokens.json"), serde_json::to_vec_pretty(&enc)?)?;
    Ok(())
}
