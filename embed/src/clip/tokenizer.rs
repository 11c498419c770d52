//! CLIP's byte-level BPE tokenizer, loaded from a Hugging Face `tokenizer.json`.

use std::path::Path;

use crate::error::{EmbedError, Result};

/// Tokenizes text the way HF's `CLIPTokenizer` does, truncating to the context length.
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    end_of_text: u32,
    context_length: usize,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json`; sequences are cut to `context_length` tokens (77 for CLIP).
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self> {
        let bad = |message: String| EmbedError::Model { path: path.to_path_buf(), message };
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| bad(format!("not a tokenizer.json: {e}")))?;
        let end_of_text =
            inner.token_to_id("<|endoftext|>").ok_or_else(|| bad("no <|endoftext|> token in the vocabulary".into()))?;
        if context_length < 2 {
            return Err(bad(format!("context length {context_length} leaves no room for the start and end tokens")));
        }
        Ok(ClipTokenizer { inner, end_of_text, context_length })
    }

    /// Token ids of `text`, start and end tokens included. Longer texts keep their first
    /// `context_length - 2` tokens and still end with the end-of-text token, as HF's
    /// `truncation=True, max_length=77` does.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, true).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > self.context_length {
            ids.truncate(self.context_length - 1);
            ids.push(self.end_of_text);
        }
        Ok(ids)
    }
}
