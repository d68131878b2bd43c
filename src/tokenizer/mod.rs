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

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{read_to_string, Error, Result};

/// The end-of-text token of GPT-2, also id 0 of the built-in character-level tokenizer.
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// The file name a tokenizer has inside a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

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

    /// Loads `dir/tokenizer.json`, the layout of a Hugging Face model directory.
    ///
    /// A directory without one is an [`Error::Tokenizer`] that says what to do instead.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            let missing_dir = if dir.is_dir() { "" } else { " (the directory does not exist)" };
            return Err(Error::tokenizer(
                dir,
                format!(
                    "no {TOKENIZER_FILE} in {}{missing_dir}; pass --tokenizer FILE, or use a checkpoint saved \
                     by this project (it writes {TOKENIZER_FILE} next to the model)",
                    dir.display()
                ),
            ));
        }
        Self::from_file(&path)
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
        Ok(Tokenizer { inner, source, vocab_size, eos_id, strict_coverage })
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

    /// The id of `<|endoftext|>`, if the vocabulary has it.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The id of the token spelled `token` (added/special tokens included), if any.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
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
