//! Test bodies shared by every backend. Each function takes a backend and asserts; the test
//! files instantiate them per backend (`cpu` today), so CPU and device run the same checks.
#![allow(dead_code)]

pub mod cli;
pub mod gradcheck;
pub mod objective;

use gepa_dapo_grn::backend::cuda::{CudaBackend, CudaDevice};
use gepa_dapo_grn::data::arithmetic::addition_problems;
use gepa_dapo_grn::data::{Task, TaskDataset};
use gepa_dapo_grn::util::rng::Rng;

/// GPU 0 as a backend, or `None` after saying why the GPU test is skipped (no GPU here).
pub fn gpu() -> Option<CudaBackend> {
    match CudaDevice::open(0) {
        Ok(d) => Some(CudaBackend::new(d)),
        Err(why) => {
            println!("skipped, no GPU: {why}");
            None
        }
    }
}

/// The first `n` tasks of the built-in addition task (seed 1), `task_id` "long" or "short" by
/// prompt length.
pub fn tasks(n: usize) -> TaskDataset {
    let (train, _) = addition_problems(1);
    TaskDataset::from_tasks(
        train
            .into_iter()
            .take(n)
            .map(|(p, a)| Task {
                prompt: p.clone(),
                task_id: if p.len() > 5 { "long".into() } else { "short".into() },
                record: serde_json::json!({ "prompt": p, "answer": a }),
            })
            .collect(),
    )
}

/// `n` samples of N(0, std²) from a seeded generator.
pub fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * std).collect()
}

/// Σ a·b in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// max |a − b| / max(max |b|, floor): the error relative to the tensor's scale.
pub fn rel_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(floor);
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}
