//! `dapo bench`: GPT-2 forward+backward throughput on random weights, printed in the same
//! format as `bench/torch_cpu_gpt2.py` so the two read side by side.

use super::device::{cpu_backend, Device};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::{Gpt2, Gpt2Config};
use crate::util::rng::Rng;
use std::time::Instant;

/// Arguments of `dapo bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Backend to time.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// CPU worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Model shape: tiny, small, gpt2 (124M) or gpt2-medium.
    #[arg(long, default_value = "gpt2")]
    model: String,
    /// Sequences per batch (B).
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Tokens per sequence (T).
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Timed iterations (after 2 warm-up iterations); the median is reported.
    #[arg(long, default_value_t = 5)]
    iters: usize,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Runs `dapo bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    let k = cpu_backend(a.device, a.threads)?;
    let cfg = Gpt2Config::named(&a.model, 50257)?;
    let (b, t) = (a.batch_size, a.seq_len);
    let mut model = Gpt2::random(k.clone(), cfg.clone(), 1)?;
    let mut rng = Rng::new(2);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size) as u32).collect();
    let weights = vec![1.0 / (b * t) as f32; b * t];
    println!(
        "dapo  {}  model={} ({:.1}M params)  backend={}",
        env!("CARGO_PKG_VERSION"),
        a.model,
        model.num_params() as f64 / 1e6,
        k.name()
    );
    let iters = a.iters.max(1);
    let time = |train: bool, model: &mut Gpt2<_>| -> Result<f64> {
        let mut secs = Vec::with_capacity(iters);
        for i in 0..iters + 2 {
            let start = Instant::now();
            if train {
                model.zero_grad();
                model.forward_backward(&ids, &targets, &weights, b, t)?;
            } else {
                model.forward(&ids, b, t)?;
            }
            if i >= 2 {
                secs.push(start.elapsed().as_secs_f64());
            }
        }
        Ok(median(secs))
    };
    let fb = time(true, &mut model)?;
    println!("dapo   fwd+bwd  B={b} T={t}  median_s={fb:.3}  tokens/s={:.1}", (b * t) as f64 / fb);
    let f = time(false, &mut model)?;
    println!("dapo   fwd      B={b} T={t}  median_s={f:.3}  tokens/s={:.1}", (b * t) as f64 / f);
    Ok(())
}
