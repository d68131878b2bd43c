//! Text to token ids and back.
//!
//! [`Tokenizer`] wraps the `tokenizers` crate, so any Hugging Face `tokenizer.json` (GPT-2's
//! byte-level BPE included) loads as is, and adds a built-in character-level tokenizer
//! ([`Tokenizer::char_level`]) for small experiments that need no download. Both are stored as
//! the same `tokenizer.json` format, so a checkpoint trained with the built-in one can be
//! loaded by `transformers` (`PreTrainedTokenizerFast(tokenizer_file=...)`).
//!
//! Two things the `tokenizers` crate does silently are turned into errors here, because in
//! training they would corrupt data without anyone noticing: a character the vocabulary cannot
//! represent (a BPE model without an unknown token drops it), and a token id outside the
//! vocabulary when decoding (skipped).

mod char_level;
mod coverage;
pub mod special;

pub use special::SpecialTokens;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{read_to_string, Error, Result};

/// The end-of-text token of GPT-2, also id 0 of the built-in character-level tokenizer.
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// The file name a tokenizer has inside a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// GPT-2's original vocabulary file (token → id), read when there is no `tokenizer.json`.
pub const VOCAB_FILE: &str = "vocab.json";
/// GPT-2's original merges file, read with [`VOCAB_FILE`].
pub const MERGES_FILE: &str = "merges.txt";

/// A loaded tokenizer: a Hugging Face `tokenizer.json` or the built-in character-level one.
///
/// Encoding never adds special tokens; decoding keeps them. Truncation and padding settings
/// stored in the file are switched off, since training needs whole sequences.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it came from, for error messages and `source()`.
    source: PathBuf,
    /// Cached: the `tokenizers` crate rebuilds the whole vocabulary map to answer this.
    vocab_size: usize,
    eos_id: Option<u32>,
    /// Special tokens by role and the rest of `tokenizer_config.json`, as read from a model
    /// directory (EOS / PAD = `<|endoftext|>` when none is named and the vocabulary has it).
    special: SpecialTokens,
    /// Whether every input character, whitespace included, must end up inside some token.
    /// Only a tokenizer with no normalizer, pre-tokenizer or post-processor promises that;
    /// the others may legitimately drop whitespace or control characters.
    strict_coverage: bool,
}

impl Tokenizer {
    /// Loads a `tokenizer.json` file.
    ///
    /// A missing or unreadable file is an [`Error::Io`] naming it; a file the `tokenizers`
    /// crate cannot parse (bad JSON, an unknown model type) is an [`Error::Tokenizer`] naming
    /// the file and carrying the parser's message.
    pub fn from_file(path: &Path) -> Result<Self> {
        let json = read_to_string(path)?;
        Self::from_json(&json, path.to_path_buf())
    }

    /// `--tokenizer PATH`: a model directory (see [`Tokenizer::from_dir`]) or a
    /// `tokenizer.json` file.
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::from_dir(path)
        } else {
            Self::from_file(path)
        }
    }

    /// Loads the tokenizer of a Hugging Face model directory: `dir/tokenizer.json`, or GPT-2's
    /// original `vocab.json` + `merges.txt` (a byte-level BPE, as transformers builds
    /// `GPT2TokenizerFast` from them), with the special tokens `tokenizer_config.json` and
    /// `special_tokens_map.json` name. The end token is the one they name (any spelling,
    /// `</s>` included); `<|endoftext|>` only when they name none.
    ///
    /// A directory with neither is an [`Error::Tokenizer`] that says what to do instead; a
    /// special token the vocabulary lacks is an error naming the file.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let special = SpecialTokens::read(dir)?;
        let path = dir.join(TOKENIZER_FILE);
        let (vocab, merges) = (dir.join(VOCAB_FILE), dir.join(MERGES_FILE));
        let mut tok = if path.is_file() {
            Self::from_file(&path)?
        } else if vocab.is_file() && merges.is_file() {
            Self::from_vocab_merges(&vocab, &merges, &special)?
        } else {
            let missing_dir = if dir.is_dir() { "" } else { " (the directory does not exist)" };
            return Err(Error::tokenizer(
                dir,
                format!(
                    "no {TOKENIZER_FILE} (nor {VOCAB_FILE} + {MERGES_FILE}) in {}{missing_dir}; pass --tokenizer \
                     FILE, or use a checkpoint saved by this project (it writes {TOKENIZER_FILE} next to the model)",
                    dir.display()
                ),
            ));
        };
        tok.set_special(special, dir)?;
        Ok(tok)
    }

    /// GPT-2's byte-level BPE from its original files: byte-level pre-tokenizer (no prefix
    /// space), decoder and post-processor, and the special tokens of `special` registered as
    /// special (so `<|endoftext|>` in a text is one token, as in transformers).
    fn from_vocab_merges(vocab: &Path, merges: &Path, special: &SpecialTokens) -> Result<Self> {
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let (v, m) = (vocab.to_string_lossy(), merges.to_string_lossy());
        let bpe = tokenizers::models::bpe::BPE::from_file(&v, &m).build().map_err(|e| {
            Error::tokenizer(vocab, format!("cannot build a BPE from {VOCAB_FILE} + {MERGES_FILE}: {e}"))
        })?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        inner.with_decoder(Some(ByteLevel::default()));
        inner.with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
        let mut specials: Vec<&str> = special::ROLES.iter().filter_map(|r| special.get(r)).collect();
        if specials.is_empty() {
            specials.push(EOS_TOKEN);
        }
        let added: Vec<tokenizers::AddedToken> =
            specials.iter().map(|t| tokenizers::AddedToken::from(t.to_string(), true)).collect();
        inner.add_special_tokens(&added);
        let json = inner.to_string(false).map_err(|e| Error::tokenizer(vocab, format!("cannot serialise: {e}")))?;
        Self::from_json(&json, vocab.to_path_buf())
    }

    /// Takes the special tokens read from `dir`: the end token becomes the one they name.
    fn set_special(&mut self, special: SpecialTokens, dir: &Path) -> Result<()> {
        for role in special::ROLES {
            if let Some(text) = special.get(role) {
                if self.inner.token_to_id(text).is_none() {
                    return Err(Error::config(
                        dir.join(special::TOKENIZER_CONFIG_FILE),
                        format!("`{role}` is {text:?}, which is not a token of {}", self.source.display()),
                    ));
                }
            }
        }
        if let Some(eos) = special.get("eos_token") {
            self.eos_id = self.inner.token_to_id(eos);
        }
        self.special = special;
        self.fill_special_defaults();
        Ok(())
    }

    /// EOS, BOS and PAD default to `<|endoftext|>` when the vocabulary has it and nothing names
    /// them (GPT-2's convention; TRL pads with EOS when a tokenizer has no PAD).
    fn fill_special_defaults(&mut self) {
        let eos = match self.special.get("eos_token") {
            Some(e) => Some(e.to_string()),
            None => self.eos_id.map(|_| EOS_TOKEN.to_string()),
        };
        if let Some(eos) = eos {
            for role in ["eos_token", "bos_token", "pad_token"] {
                self.special.set_default(role, &eos);
            }
        }
    }

    /// Parses `tokenizer.json` text; `source` names it in errors.
    fn from_json(json: &str, source: PathBuf) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_str(json)
            .map_err(|e| Error::tokenizer(&source, format!("not a valid {TOKENIZER_FILE}: {e}")))?;
        // A file saved for inference may truncate or pad every encoding to a fixed length,
        // which would silently cut training examples.
        inner
            .with_truncation(None)
            .map_err(|e| Error::tokenizer(&source, format!("cannot disable truncation: {e}")))?;
        inner.with_padding(None);
        // ids lie in 0..vocab_size; the largest id rather than the count, so that a vocabulary
        // with holes still sizes the embedding table correctly.
        let vocab_size = inner.get_vocab(true).values().map(|&id| id as usize + 1).max().unwrap_or(0);
        let eos_id = inner.token_to_id(EOS_TOKEN);
        let strict_coverage = inner.get_normalizer().is_none()
            && inner.get_pre_tokenizer().is_none()
            && inner.get_post_processor().is_none();
        let mut tok =
            Tokenizer { inner, source, vocab_size, eos_id, special: SpecialTokens::default(), strict_coverage };
        tok.fill_special_defaults();
        Ok(tok)
    }

    /// Encodes `text` without adding special tokens (a literal `<|endoftext|>` in the text
    /// still becomes the EOS id, as in Hugging Face tokenizers).
    ///
    /// A character the vocabulary cannot represent is an [`Error::Tokenizer`] naming the
    /// character and its position, never silently dropped.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::tokenizer(&self.source, format!("cannot encode text: {e}")))?;
        if let Some(gap) = coverage::first_uncovered(text, encoding.get_offsets(), self.strict_coverage) {
            return Err(self.dropped_error(text, gap, encoding.get_ids()));
        }
        Ok(encoding.get_ids().to_vec())
    }

    /// The error for an encoding of `text` that left the character at byte `gap` uncovered.
    fn dropped_error(&self, text: &str, gap: usize, ids: &[u32]) -> Error {
        let describe = |byte: usize| {
            let c = text[byte..].chars().next().unwrap_or_default();
            let position = text[..byte].chars().count();
            format!("character {c:?} (U+{:04X}) at position {position} of the text", c as u32)
        };
        // With no normalizer or pre-tokenizer the tokens are verbatim pieces of the text, so
        // matching them against it names the dropped character exactly (the gap itself is
        // shifted past it, see `coverage`).
        if self.strict_coverage {
            let pieces = ids.iter().map(|&id| self.inner.id_to_token(id).unwrap_or_default());
            if let Some(byte) = coverage::first_unmatched(text, pieces) {
                return Error::tokenizer(&self.source, format!("{} is not in the vocabulary", describe(byte)));
            }
        }
        Error::tokenizer(
            &self.source,
            format!(
                "no token covers {}: a character at or before it is not in the vocabulary and was dropped",
                describe(gap)
            ),
        )
    }

    /// Decodes `ids` back to text, special tokens included.
    ///
    /// An id the vocabulary does not have is an [`Error::Tokenizer`] naming it.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        for &id in ids {
            if id as usize >= self.vocab_size {
                return Err(Error::tokenizer(
                    &self.source,
                    format!("token id {id} is out of range (vocab_size {})", self.vocab_size),
                ));
            }
            if self.inner.id_to_token(id).is_none() {
                return Err(Error::tokenizer(&self.source, format!("token id {id} has no token in the vocabulary")));
            }
        }
        self.inner.decode(ids, false).map_err(|e| Error::tokenizer(&self.source, format!("cannot decode: {e}")))
    }

    /// The number of token ids, added tokens included: every id lies in `0..vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The id of the end token: the one the model directory's tokenizer configs name, else
    /// `<|endoftext|>` if the vocabulary has it.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The id of the padding token: the configs' `pad_token`, else the end token.
    pub fn pad_id(&self) -> Option<u32> {
        self.special.get("pad_token").and_then(|t| self.inner.token_to_id(t)).or(self.eos_id)
    }

    /// The special tokens and `tokenizer_config.json` fields written with it.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// The id of the token spelled `token` (added/special tokens included), if any.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Writes what transformers' `AutoTokenizer.from_pretrained(dir)` loads: `tokenizer.json`,
    /// `tokenizer_config.json` (the input's fields kept, a `chat_template` included; EOS, BOS
    /// and PAD set) and `special_tokens_map.json`.
    pub fn save_dir(&self, dir: &Path, model_max_length: usize) -> Result<()> {
        self.save(&dir.join(TOKENIZER_FILE))?;
        self.special.write(dir, model_max_length)
    }

    /// Writes the tokenizer as a pretty-printed `tokenizer.json` at `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json =
            self.inner.to_string(true).map_err(|e| Error::tokenizer(&self.source, format!("cannot serialise: {e}")))?;
        std::fs::write(path, json).map_err(|e| Error::io(path, e))
    }

    /// Where the tokenizer came from: its `tokenizer.json`, or `<built-in char-level>`.
    pub fn source(&self) -> &Path {
        &self.source
    }
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The full vocabulary would flood any log it appears in.
        let model = match self.inner.get_model() {
            tokenizers::ModelWrapper::BPE(_) => "BPE",
            tokenizers::ModelWrapper::WordPiece(_) => "WordPiece",
            tokenizers::ModelWrapper::WordLevel(_) => "WordLevel",
            tokenizers::ModelWrapper::Unigram(_) => "Unigram",
        };
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("model", &model)
            .field("vocab_size", &self.vocab_size)
            .field("eos_id", &self.eos_id)
            .finish()
    }
}
