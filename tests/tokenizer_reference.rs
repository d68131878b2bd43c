//! A GPT-2-style byte-level BPE `tokenizer.json` (made by the Python `tokenizers` library in
//! `tools/golden/gen_tokenizer.py`) loads through the Rust crate and reproduces the Python
//! ids and decodes exactly, including accents, CJK, emoji, tabs and the EOS token.

use gepa_dapo_grn::tokenizer::Tokenizer;
use std::path::Path;

/// Every probe of `expected` encodes to its ids and decodes back to its text.
fn check_probes(tok: &Tokenizer, expected: &serde_json::Value) {
    for probe in expected["probes"].as_array().unwrap() {
        let text = probe["text"].as_str().unwrap();
        let want: Vec<u32> = probe["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids, want, "ids of {text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), probe["decoded"].as_str().unwrap(), "decode of {text:?}");
    }
}

#[test]
fn bytelevel_bpe_matches_python() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer");
    let tok = Tokenizer::from_file(&dir.join("bytelevel_bpe.json")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(tok.vocab_size() as u64, expected["vocab_size"].as_u64().unwrap());
    assert_eq!(tok.eos_id(), Some(0));
    check_probes(&tok, &expected);
}

#[test]
fn vocab_json_and_merges_txt_load_like_transformers_slow_gpt2_tokenizer() {
    // A model directory with GPT-2's original files only (no tokenizer.json) whose configs
    // name `</s>` as the end token: ids, decodes and the end token as transformers' pure-Python
    // GPT2Tokenizer gives them (tools/golden/gen_vocab_merges.py).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer/gpt2_files");
    assert!(!dir.join("tokenizer.json").exists());
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(tok.vocab_size() as u64, expected["vocab_size"].as_u64().unwrap());
    assert_eq!(tok.eos_id().map(u64::from), expected["eos_id"].as_u64(), "the end token is the configs' </s>");
    assert_eq!(tok.token_to_id("</s>").map(u64::from), expected["eos_id"].as_u64());
    check_probes(&tok, &expected);
    // Saved into a checkpoint, the tokenizer keeps its end token and the input's chat template.
    let out = tempfile::tempdir().unwrap();
    tok.save_dir(out.path(), 128).unwrap();
    let back = Tokenizer::from_dir(out.path()).unwrap();
    assert_eq!(back.eos_id(), tok.eos_id());
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!((cfg["chat_template"].as_str(), cfg["pad_token"].as_str()), (Some("{{ messages }}"), Some("</s>")));
}
