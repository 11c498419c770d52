//! CLIP zero-shot tags: a vocabulary (TOML: attribute → value → prompts) turned into one
//! text vector per value, and an image vector classified against every attribute.
//!
//! A value's vector is the normalised mean of its prompts' normalised text embeddings
//! (the prompt ensembling of the CLIP paper). An image's scores for an attribute are the
//! softmax over that attribute's values of `100 · cos(image, value)`, 100 being the
//! temperature trained CLIP models settle at (`exp(logit_scale)`), so a score reads as the
//! probability CLIP gives the value among the listed ones.

use std::collections::BTreeMap;

use crate::error::{EmbedError, Result};

/// The vocabulary that ships with slicetest (time of day, weather, indoor/outdoor, scene, kind of image).
pub const DEFAULT_VOCABULARY: &str = include_str!("../../vocab/default.toml");

/// CLIP's softmax temperature for zero-shot classification.
pub const LOGIT_SCALE: f32 = 100.0;

/// attribute → value → prompts, sorted by name (so the columns and ties are deterministic).
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    /// The attributes; each becomes the columns `<attribute>` and `<attribute>_score`.
    pub attributes: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Vocabulary {
    /// The default vocabulary.
    pub fn default_vocabulary() -> Vocabulary {
        Vocabulary::parse(DEFAULT_VOCABULARY, "the default vocabulary").expect("the default vocabulary is valid")
    }

    /// Parses and checks a vocabulary; `origin` (a path) names it in errors. Every
    /// attribute needs at least two values, every value at least one non-empty prompt,
    /// and attribute names must be lower-case SQL identifiers, since they become columns.
    pub fn parse(text: &str, origin: &str) -> Result<Vocabulary> {
        let bad = |message: String| EmbedError::Vocabulary { origin: origin.to_string(), message };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| bad(e.to_string()))?;
        let mut attributes = BTreeMap::new();
        for (attribute, values) in table {
            check_identifier(&attribute).map_err(|m| bad(format!("attribute {attribute:?}: {m}")))?;
            let values = values
                .as_table()
                .ok_or_else(|| bad(format!("attribute {attribute:?} must be a table of value = [prompts]")))?;
            if values.len() < 2 {
                return Err(bad(format!("attribute {attribute:?} needs at least two values to choose between")));
            }
            let mut parsed = BTreeMap::new();
            for (value, prompts) in values {
                let at = format!("{attribute}.{value}");
                let prompts = prompts
                    .as_array()
                    .ok_or_else(|| bad(format!("{at} must be a list of prompt strings")))?
                    .iter()
                    .map(|p| p.as_str().map(str::trim).map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| bad(format!("{at}: every prompt must be a string")))?;
                if prompts.is_empty() {
                    return Err(bad(format!("{at} has an empty prompt list")));
                }
                if prompts.iter().any(String::is_empty) {
                    return Err(bad(format!("{at} has an empty prompt")));
                }
                parsed.insert(value.clone(), prompts);
            }
            attributes.insert(attribute, parsed);
        }
        if attributes.is_empty() {
            return Err(bad("no attributes".into()));
        }
        Ok(Vocabulary { attributes })
    }

    /// The column names the vocabulary produces, in order.
    pub fn columns(&self) -> Vec<String> {
        self.attributes.keys().flat_map(|a| [a.clone(), format!("{a}_score")]).collect()
    }

    /// Every prompt, in attribute / value order (the order [`ZeroShotClassifier::new`] wants vectors in).
    pub fn prompts(&self) -> Vec<&str> {
        self.attributes.values().flat_map(|values| values.values().flatten().map(String::as_str)).collect()
    }
}

fn check_identifier(name: &str) -> std::result::Result<(), &'static str> {
    let ok = name.len() <= 58
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok { Ok(()) } else { Err("names are lower-case letters, digits and '_', starting with a letter") }
}

/// One attribute's value vectors.
#[derive(Debug, Clone)]
struct Attribute {
    values: Vec<String>,
    /// One normalised vector per value, row-major.
    vectors: Vec<f32>,
}

/// Classifies image vectors against a vocabulary.
#[derive(Debug, Clone)]
pub struct ZeroShotClassifier {
    attributes: Vec<Attribute>,
    dim: usize,
}

/// The best value of one attribute for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShotTag {
    /// The winning value.
    pub value: String,
    /// Its softmax probability among the attribute's values.
    pub score: f32,
}

impl ZeroShotClassifier {
    /// Builds value vectors from the normalised embeddings of [`Vocabulary::prompts`], in that order.
    pub fn new(vocabulary: &Vocabulary, prompt_vectors: &[Vec<f32>]) -> Result<Self> {
        let dim = prompt_vectors.first().map_or(0, Vec::len);
        let mut next = prompt_vectors.iter();
        let mut attributes = Vec::new();
        for values in vocabulary.attributes.values() {
            let mut attribute = Attribute { values: Vec::new(), vectors: Vec::new() };
            for (value, prompts) in values {
                let mut mean = vec![0f32; dim];
                for _ in prompts {
                    let v = next.next().ok_or_else(|| EmbedError::Tokenizer("fewer vectors than prompts".into()))?;
                    mean.iter_mut().zip(v).for_each(|(m, x)| *m += x);
                }
                normalise(&mut mean);
                attribute.values.push(value.clone());
                attribute.vectors.extend(mean);
            }
            attributes.push(attribute);
        }
        Ok(ZeroShotClassifier { attributes, dim })
    }

    /// The best value and its probability for every attribute, in vocabulary order.
    pub fn classify(&self, image: &[f32]) -> Vec<ZeroShotTag> {
        self.attributes
            .iter()
            .map(|attribute| {
                let logits: Vec<f32> = attribute
                    .vectors
                    .chunks_exact(self.dim.max(1))
                    .map(|v| LOGIT_SCALE * v.iter().zip(image).map(|(a, b)| a * b).sum::<f32>())
                    .collect();
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let total: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                // The first of equal maxima wins: values are sorted, so ties are deterministic.
                let best = logits.iter().position(|&l| l == max).unwrap_or(0);
                ZeroShotTag { value: attribute.values[best].clone(), score: 1.0 / total }
            })
            .collect()
    }
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Reads a vocabulary file.
pub fn read_vocabulary(path: &std::path::Path) -> Result<Vocabulary> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EmbedError::Vocabulary { origin: path.display().to_string(), message: e.to_string() })?;
    Vocabulary::parse(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_vocabulary_parses_into_sorted_columns() {
        let v = Vocabulary::default_vocabulary();
        let columns = v.columns();
        assert_eq!(&columns[..2], ["image_kind", "image_kind_score"]);
        assert!(columns.contains(&"weather".to_string()) && columns.contains(&"time_of_day_score".to_string()));
        assert_eq!(v.prompts().len(), v.attributes.values().flat_map(|a| a.values()).map(Vec::len).sum::<usize>());
    }

    #[test]
    fn bad_vocabularies_say_what_and_where() {
        for (text, expect) in [
            ("[weather]\nsunny = []\nrainy = [\"rain\"]", "weather.sunny has an empty prompt list"),
            ("[weather]\nsunny = [\"\"]\nrainy = [\"rain\"]", "empty prompt"),
            ("[weather]\nsunny = [\"sun\"]", "at least two values"),
            ("[Weather]\na = [\"x\"]\nb = [\"y\"]", "lower-case"),
            ("[weather]\nsunny = \"sun\"\nrainy = [\"rain\"]", "list of prompt strings"),
            ("weather = 3", "must be a table"),
            ("", "no attributes"),
            ("[weather", "my.toml"),
        ] {
            let err = Vocabulary::parse(text, "my.toml").unwrap_err().to_string();
            assert!(err.contains(expect) && err.contains("my.toml"), "{text:?} → {err}");
        }
    }

    #[test]
    fn classification_picks_the_closest_value_with_softmax_scores() {
        let v = Vocabulary::parse("[side]\nleft = [\"l1\", \"l2\"]\nright = [\"r\"]", "t").unwrap();
        // Prompts: l1, l2 (mean → x axis), r (y axis).
        let vectors = vec![vec![1.0, 0.1], vec![1.0, -0.1], vec![0.0, 1.0]];
        let c = ZeroShotClassifier::new(&v, &vectors).unwrap();
        let tags = c.classify(&[0.6, 0.8]);
        assert_eq!(tags[0].value, "right");
        let expected = 1.0 / (1.0 + (100.0f32 * (0.6 - 0.8)).exp());
        assert!((tags[0].score - expected).abs() < 1e-6);
        assert_eq!(c.classify(&[1.0, 0.0])[0].value, "left");
    }
}
