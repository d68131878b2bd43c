//! Bad input gets an error that names the file and the tensor, field or line, never a panic.

use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::checkpoint::{load_model, TensorFile};
use gepa_dapo_grn::model::{Gpt2, Gpt2Config};
use safetensors::tensor::{Dtype, TensorView};
use std::path::{Path, PathBuf};

fn golden_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/b/model")
}

/// A copy of the golden model directory whose weights file is rewritten by `edit`, which
/// gets (name, dtype, shape, bytes) for every tensor and returns the ones to write.
fn edited_model(
    edit: impl Fn(Vec<(String, Dtype, Vec<usize>, Vec<u8>)>) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(golden_model().join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(golden_model().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<_> =
        st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    let tensors = edit(tensors);
    let views: Vec<_> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, &None, &dir.path().join("model.safetensors")).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    match load_model(dir, CpuBackend::new(Some(1))) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_tensor_is_named() {
    let dir = edited_model(|mut t| {
        t.retain(|(n, ..)| n != "transformer.h.1.mlp.c_fc.bias");
        t
    });
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors") && e.contains("h.1.mlp.c_fc.bias") && e.contains("missing"), "{e}");
}

#[test]
fn misshapen_tensor_is_named_with_both_shapes() {
    let dir = edited_model(|mut t| {
        for (n, _, shape, bytes) in t.iter_mut() {
            if n == "transformer.h.0.attn.c_attn.weight" {
                // Stored as [out, in] (a Linear, not a Conv1D): same size, wrong shape.
                shape.swap(0, 1);
                let _ = bytes;
            }
        }
        t
    });
    let e = load_err(dir.path());
    assert!(e.contains("h.0.attn.c_attn.weight") && e.contains("[96, 32]") && e.contains("[32, 96]"), "{e}");
}

#[test]
fn wrong_dtype_is_named() {
    let dir = edited_model(|mut t| {
        for (n, dtype, shape, bytes) in t.iter_mut() {
            if n == "transformer.ln_f.weight" {
                *dtype = Dtype::I32;
                assert_eq!(bytes.len(), 4 * shape.iter().product::<usize>());
            }
        }
        t
    });
    let e = load_err(dir.path());
    assert!(e.contains("ln_f.weight") && e.contains("I32"), "{e}");
}

#[test]
fn non_finite_weight_is_named() {
    let dir = edited_model(|mut t| {
        for (n, _, _, bytes) in t.iter_mut() {
            if n == "transformer.wpe.weight" {
                bytes[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
            }
        }
        t
    });
    let e = load_err(dir.path());
    assert!(e.contains("wpe.weight") && e.contains("not finite"), "{e}");
}

#[test]
fn truncated_file_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(golden_model().join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(golden_model().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors file"), "{e}");
    // A file cut inside the header is caught the same way.
    std::fs::write(dir.path().join("model.safetensors"), &bytes[..20]).unwrap();
    assert!(load_err(dir.path()).contains("not a valid safetensors file"));
}

#[test]
fn config_missing_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden_model().join("config.json")).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("n_embd");
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(golden_model().join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("config.json") && e.contains("n_embd"), "{e}");
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("config.json") && e.contains("invalid JSON"), "{e}");
}

#[test]
fn missing_weights_and_missing_dir_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(golden_model().join("config.json"), dir.path().join("config.json")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");
    let e = load_err(&dir.path().join("nope"));
    assert!(e.contains("nope") && e.contains("not a directory"), "{e}");
}

#[test]
fn token_ids_out_of_range_are_rejected() {
    let cfg = Gpt2Config::named("tiny", 50).unwrap();
    let mut m = Gpt2::random(CpuBackend::new(Some(1)), cfg, 0).unwrap();
    let e = m.forward(&[1, 2, 50, 3], 1, 4).unwrap_err().to_string();
    assert!(e.contains("token id 50") && e.contains("position 2") && e.contains("vocab_size 50"), "{e}");
    let e = m.loss(&[1, 2, 3, 4], &[1, 99, 3, 4], &[0.25; 4], 1, 4).unwrap_err().to_string();
    assert!(e.contains("target token id 99"), "{e}");
    let e = m.forward(&vec![0; 129], 1, 129).unwrap_err().to_string();
    assert!(e.contains("n_positions"), "{e}");
    let e = m.forward(&[], 0, 4).unwrap_err().to_string();
    assert!(e.contains("empty batch"), "{e}");
}

#[test]
fn golden_model_itself_loads() {
    // The fixtures above are edits of a file that is fine as is.
    let f = TensorFile::open(&golden_model().join("model.safetensors")).unwrap();
    assert!(f.names().len() >= 2 + 12 * 3 + 2);
    load_model(&golden_model(), CpuBackend::new(Some(1))).unwrap();
}
