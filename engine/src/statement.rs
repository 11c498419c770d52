//! slicetest's own SQL statements, recognised before DataFusion sees the text:
//!
//! ```sql
//! CREATE SLICE <name> [COMMENT '<text>'] [WITH (min_accuracy = 0.9, min_samples = 30)]
//!   AS <SELECT returning image_id>
//! CREATE SLICE <name> WITH (min_map = 0.3, min_ap50 = 0.5, min_recall = 0.7,
//!   min_recall.person = 0.8) AS …                      -- thresholds for detection runs
//! CREATE SLICE <name> WITH (min_miou = 0.5, min_pixel_accuracy = 0.9,
//!   min_iou.person = 0.4) AS …                         -- thresholds for segmentation runs
//! DROP SLICE [IF EXISTS] <name>
//! SHOW SLICES
//! DESCRIBE SLICE <name>
//! FREEZE SLICE <name> [WITH (holdout = 0.2, seed = 7)]   -- left out: the latest version's
//! ```
//!
//! Anything else is left to DataFusion (`parse` returns None).

use crate::error::{EngineError, Result};

/// The slice test of a slice: what a run must reach on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SliceThresholds {
    /// Fail the slice when accuracy is below this.
    pub min_accuracy: Option<f64>,
    /// Fewer scored samples than this is "not enough data".
    pub min_samples: Option<u64>,
    /// Detection runs: fail below this COCO AP (IoU 0.50:0.95).
    pub min_map: Option<f64>,
    /// Detection runs: fail below this AP at IoU 0.50.
    pub min_ap50: Option<f64>,
    /// Detection runs with instance masks: fail below this mask AP (IoU 0.50:0.95).
    pub min_mask_map: Option<f64>,
    /// Detection runs with poses: fail below this keypoint AP (OKS 0.50:0.95).
    pub min_keypoint_map: Option<f64>,
    /// Detection runs: fail below this recall at the run's operating point.
    pub min_recall: Option<f64>,
    /// Detection runs: per-category recall thresholds (`min_recall.person`).
    pub min_class_recall: std::collections::BTreeMap<String, f64>,
    /// Segmentation runs: fail below this mean IoU.
    pub min_miou: Option<f64>,
    /// Segmentation runs: fail below this pixel accuracy.
    pub min_pixel_accuracy: Option<f64>,
    /// Segmentation runs: per-class IoU thresholds (`min_iou.person`).
    pub min_class_iou: std::collections::BTreeMap<String, f64>,
}

/// The options `CREATE SLICE … WITH (…)` knows.
const THRESHOLD_OPTIONS: &str = "min_accuracy, min_samples, min_map, min_ap50, min_mask_map, min_keypoint_map, \
                                 min_recall, min_recall.<category>, \
                                 min_miou, min_pixel_accuracy and min_iou.<class>";

/// A parsed slice statement.
// One is parsed per statement a person writes; boxing the thresholds would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SliceStatement {
    /// `CREATE SLICE name [COMMENT '…'] [WITH (…)] AS <query>`.
    Create {
        /// The slice's name.
        name: String,
        /// Its comment.
        comment: Option<String>,
        /// `WITH (min_accuracy = …, …)`.
        thresholds: SliceThresholds,
        /// The query that selects its images.
        query: String,
    },
    /// `DROP SLICE [IF EXISTS] name`.
    Drop {
        /// The slice's name.
        name: String,
        /// `IF EXISTS`: a missing slice is not an error.
        if_exists: bool,
    },
    /// `SHOW SLICES`.
    Show,
    /// `DESCRIBE SLICE name`.
    Describe {
        /// The slice's name.
        name: String,
    },
    /// `FREEZE SLICE name [WITH (holdout = …, seed = …)]`.
    Freeze {
        /// The slice's name.
        name: String,
        /// The share of members held out; None keeps the latest frozen version's
        /// ([`DEFAULT_HOLDOUT`] at a first freeze).
        holdout: Option<f64>,
        /// The hold-out assignment's seed; None keeps the latest frozen version's
        /// ([`DEFAULT_SEED`] at a first freeze).
        seed: Option<u64>,
    },
}

impl SliceStatement {
    /// Whether the statement changes the workspace.
    pub fn is_write(&self) -> bool {
        matches!(self, Self::Create { .. } | Self::Drop { .. } | Self::Freeze { .. })
    }
}

/// Hold-out share of a slice's first freeze when none is given (a later freeze keeps the
/// latest version's).
pub const DEFAULT_HOLDOUT: f64 = 0.0;
/// Hold-out seed of a slice's first freeze when none is given (a later freeze keeps the
/// latest version's).
pub const DEFAULT_SEED: u64 = 0;

/// Parses a slice statement; None when `sql` is not one.
pub fn parse(sql: &str) -> Option<Result<SliceStatement>> {
    let mut s = Scanner { sql, pos: 0 };
    let statement = if s.keyword("CREATE") && s.keyword("SLICE") {
        create(&mut s)
    } else if s.reset() && s.keyword("DROP") && s.keyword("SLICE") {
        drop(&mut s)
    } else if s.reset() && s.keyword("SHOW") && s.keyword("SLICES") {
        Ok(SliceStatement::Show)
    } else if s.reset() && s.keyword("DESCRIBE") && s.keyword("SLICE") {
        s.name().map(|name| SliceStatement::Describe { name })
    } else if s.reset() && s.keyword("FREEZE") && s.keyword("SLICE") {
        freeze(&mut s)
    } else {
        return None;
    };
    Some(statement.and_then(|st| {
        if matches!(st, SliceStatement::Create { .. }) {
            return Ok(st);
        }
        s.punct(';');
        if s.at_end() { Ok(st) } else { Err(s.error("unexpected text after the statement")) }
    }))
}

fn create(s: &mut Scanner) -> Result<SliceStatement> {
    let name = s.name()?;
    let comment = if s.keyword("COMMENT") { Some(s.string()?) } else { None };
    let mut thresholds = SliceThresholds::default();
    if s.keyword("WITH") {
        for (key, value) in options(s, THRESHOLD_OPTIONS)? {
            let rate = |name: &str| -> Result<f64> {
                value.parse().map_err(|_| s.error(&format!("{name} is a number between 0 and 1")))
            };
            if let Some(category) = key.strip_prefix("min_recall.") {
                thresholds.min_class_recall.insert(category.to_string(), rate(&key)?);
                continue;
            }
            if let Some(class) = key.strip_prefix("min_iou.") {
                thresholds.min_class_iou.insert(class.to_string(), rate(&key)?);
                continue;
            }
            match key.as_str() {
                "min_map" => thresholds.min_map = Some(rate("min_map")?),
                "min_ap50" => thresholds.min_ap50 = Some(rate("min_ap50")?),
                "min_mask_map" => thresholds.min_mask_map = Some(rate("min_mask_map")?),
                "min_keypoint_map" => thresholds.min_keypoint_map = Some(rate("min_keypoint_map")?),
                "min_recall" => thresholds.min_recall = Some(rate("min_recall")?),
                "min_miou" => thresholds.min_miou = Some(rate("min_miou")?),
                "min_pixel_accuracy" => thresholds.min_pixel_accuracy = Some(rate("min_pixel_accuracy")?),
                "min_accuracy" => {
                    thresholds.min_accuracy =
                        Some(value.parse().map_err(|_| s.error("min_accuracy is a number between 0 and 1"))?)
                }
                "min_samples" => {
                    thresholds.min_samples =
                        Some(value.parse().map_err(|_| s.error("min_samples is a non-negative integer"))?)
                }
                other => {
                    return Err(s.error(&format!("unknown option {other:?}; options are {THRESHOLD_OPTIONS}")));
                }
            }
        }
    }
    if !s.keyword("AS") {
        return Err(s.error("expected AS <query> (CREATE SLICE <name> [COMMENT '…'] AS SELECT image_id FROM …)"));
    }
    let query = s.rest().trim().trim_end_matches(';').trim().to_string();
    if query.is_empty() {
        return Err(s.error("expected a query after AS"));
    }
    Ok(SliceStatement::Create { name, comment, thresholds, query })
}

fn drop(s: &mut Scanner) -> Result<SliceStatement> {
    let if_exists = s.keyword("IF") && {
        if !s.keyword("EXISTS") {
            return Err(s.error("expected EXISTS after IF"));
        }
        true
    };
    Ok(SliceStatement::Drop { name: s.name()?, if_exists })
}

fn freeze(s: &mut Scanner) -> Result<SliceStatement> {
    let name = s.name()?;
    let (mut holdout, mut seed) = (None, None);
    if s.keyword("WITH") {
        for (key, value) in options(s, "holdout and seed")? {
            match key.as_str() {
                "holdout" => holdout = Some(value.parse().map_err(|_| s.error("holdout is a number between 0 and 1"))?),
                "seed" => seed = Some(value.parse().map_err(|_| s.error("seed is a non-negative integer"))?),
                other => return Err(s.error(&format!("unknown option {other:?}; options are holdout and seed"))),
            }
        }
    }
    Ok(SliceStatement::Freeze { name, holdout, seed })
}

/// `( key = number [, …] )`, keys lower-cased; `known` names the valid keys for errors.
fn options(s: &mut Scanner, known: &str) -> Result<Vec<(String, String)>> {
    if !s.punct('(') {
        return Err(s.error("expected ( after WITH"));
    }
    let mut out = Vec::new();
    loop {
        let mut key = s.word().ok_or_else(|| s.error(&format!("expected an option: {known}")))?.to_ascii_lowercase();
        // `min_recall.person`, `min_recall."traffic light"`, `min_iou.road`: a category keeps its case.
        if s.punct('.') {
            key = format!("{key}.{}", s.name()?);
        }
        if !s.punct('=') {
            return Err(s.error(&format!("expected = after {key}")));
        }
        out.push((key, s.number()?));
        if s.punct(')') {
            return Ok(out);
        }
        if !s.punct(',') {
            return Err(s.error("expected , or )"));
        }
    }
}

/// The length of the `/* … */` comment `text` starts with (nested ones inside it
/// included, as the SQL parser reads them); None when it starts with none or the comment
/// is not closed (the text is then not a slice statement, and the SQL parser says why).
fn block_comment(text: &str) -> Option<usize> {
    if !text.starts_with("/*") {
        return None;
    }
    let (mut depth, mut pos) = (0usize, 0usize);
    while pos < text.len() {
        let rest = &text[pos..];
        if rest.starts_with("/*") {
            depth += 1;
            pos += 2;
        } else if rest.starts_with("*/") {
            depth -= 1;
            pos += 2;
            if depth == 0 {
                return Some(pos);
            }
        } else {
            pos += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    None
}

/// A small hand-written scanner: the statements are few and the query after `AS` must be
/// passed through byte for byte.
struct Scanner<'a> {
    sql: &'a str,
    pos: usize,
}

impl Scanner<'_> {
    fn reset(&mut self) -> bool {
        self.pos = 0;
        true
    }

    fn skip_space(&mut self) {
        loop {
            let rest = &self.sql[self.pos..];
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with("--") {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else if let Some(len) = block_comment(trimmed) {
                self.pos += len;
            } else {
                return;
            }
        }
    }

    fn word(&mut self) -> Option<String> {
        self.skip_space();
        let rest = &self.sql[self.pos..];
        let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).unwrap_or(rest.len());
        if len == 0 {
            return None;
        }
        self.pos += len;
        Some(rest[..len].to_string())
    }

    fn keyword(&mut self, kw: &str) -> bool {
        let start = self.pos;
        match self.word() {
            Some(w) if w.eq_ignore_ascii_case(kw) => true,
            _ => {
                self.pos = start;
                false
            }
        }
    }

    /// A slice name: a bare word or a "quoted" identifier.
    fn name(&mut self) -> Result<String> {
        self.skip_space();
        if self.sql[self.pos..].starts_with('"') {
            let rest = &self.sql[self.pos + 1..];
            let end = rest.find('"').ok_or_else(|| self.error("unterminated quoted name"))?;
            self.pos += end + 2;
            return Ok(rest[..end].to_string());
        }
        self.word().ok_or_else(|| self.error("expected a slice name (letters, digits, '_' and '-')"))
    }

    fn string(&mut self) -> Result<String> {
        self.skip_space();
        if !self.sql[self.pos..].starts_with('\'') {
            return Err(self.error("expected a 'quoted string'"));
        }
        let mut out = String::new();
        let mut chars = self.sql[self.pos + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if self.sql[self.pos + 1 + i + 1..].starts_with('\'') {
                    out.push('\'');
                    chars.next();
                } else {
                    self.pos += i + 2;
                    return Ok(out);
                }
            } else {
                out.push(c);
            }
        }
        Err(self.error("unterminated string"))
    }

    fn number(&mut self) -> Result<String> {
        self.skip_space();
        let rest = &self.sql[self.pos..];
        let len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e')).unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a number"));
        }
        self.pos += len;
        Ok(rest[..len].to_string())
    }

    fn punct(&mut self, c: char) -> bool {
        self.skip_space();
        if self.sql[self.pos..].starts_with(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn rest(&mut self) -> &str {
        let rest = &self.sql[self.pos..];
        self.pos = self.sql.len();
        rest
    }

    fn at_end(&mut self) -> bool {
        self.skip_space();
        self.pos == self.sql.len()
    }

    fn error(&self, message: &str) -> EngineError {
        let line = self.sql[..self.pos].matches('\n').count() + 1;
        let column = self.pos - self.sql[..self.pos].rfind('\n').map_or(0, |i| i + 1) + 1;
        EngineError::Parse { message: message.to_string(), line, column }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> SliceStatement {
        parse(sql).expect("a slice statement").expect("parses")
    }

    fn err(sql: &str) -> String {
        parse(sql).expect("a slice statement").unwrap_err().to_string()
    }

    #[test]
    fn statements_parse() {
        assert_eq!(
            ok("create slice dark_shirts comment 'it''s dark' as SELECT image_id FROM images WHERE label = 'Shirt';"),
            SliceStatement::Create {
                name: "dark_shirts".into(),
                comment: Some("it's dark".into()),
                thresholds: SliceThresholds::default(),
                query: "SELECT image_id FROM images WHERE label = 'Shirt'".into()
            }
        );
        assert_eq!(
            ok("CREATE SLICE s WITH (min_accuracy = 0.9, MIN_SAMPLES = 50) AS SELECT image_id FROM images"),
            SliceStatement::Create {
                name: "s".into(),
                comment: None,
                thresholds: SliceThresholds { min_accuracy: Some(0.9), min_samples: Some(50), ..Default::default() },
                query: "SELECT image_id FROM images".into()
            }
        );
        let detection =
            ok("CREATE SLICE s WITH (min_map = 0.3, MIN_AP50 = 0.5, min_recall = 0.7, min_mask_map = 0.2, \
                min_keypoint_map = 0.4, \
             min_recall.person = 0.8, min_recall.\"traffic light\" = 0.25) AS SELECT image_id FROM images");
        let SliceStatement::Create { thresholds, .. } = detection else { panic!("{detection:?}") };
        assert_eq!((thresholds.min_map, thresholds.min_ap50, thresholds.min_recall), (Some(0.3), Some(0.5), Some(0.7)));
        assert_eq!(thresholds.min_mask_map, Some(0.2));
        assert_eq!(thresholds.min_keypoint_map, Some(0.4));
        assert_eq!(
            thresholds.min_class_recall.into_iter().collect::<Vec<_>>(),
            [("person".to_string(), 0.8), ("traffic light".to_string(), 0.25)]
        );
        assert_eq!(ok("DROP SLICE IF EXISTS a-b"), SliceStatement::Drop { name: "a-b".into(), if_exists: true });
        assert_eq!(ok("  show slices ;"), SliceStatement::Show);
        assert_eq!(ok("DESCRIBE SLICE \"x\""), SliceStatement::Describe { name: "x".into() });
        assert_eq!(
            ok("FREEZE SLICE s WITH (holdout = 0.2, seed = 7)"),
            SliceStatement::Freeze { name: "s".into(), holdout: Some(0.2), seed: Some(7) }
        );
        assert_eq!(
            ok("-- note\nFREEZE SLICE s"),
            SliceStatement::Freeze { name: "s".into(), holdout: None, seed: None }
        );
        for commented in [
            "/* cleanup */ DROP SLICE x",
            "/* a /* nested */ note */\n-- and a line\nDROP /* here too */ SLICE x;",
            "-- note\n/* multi\n line */ drop slice x -- trailing\n",
        ] {
            assert_eq!(ok(commented), SliceStatement::Drop { name: "x".into(), if_exists: false }, "{commented}");
        }
        assert_eq!(ok("/**/SHOW SLICES /* done */"), SliceStatement::Show);
        assert_eq!(
            ok("FREEZE SLICE s WITH (seed = 3)"),
            SliceStatement::Freeze { name: "s".into(), holdout: None, seed: Some(3) }
        );
    }

    #[test]
    fn other_sql_is_left_to_datafusion() {
        for sql in [
            "SELECT 1",
            "DESCRIBE images",
            "CREATE TABLE t (a int)",
            "SHOW TABLES",
            "DROP TABLE t",
            "/* DROP SLICE x */ SELECT 1",
            "/* unclosed DROP SLICE x",
        ] {
            assert!(parse(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn malformed_statements_say_where() {
        assert!(err("CREATE SLICE s SELECT 1").contains("expected AS"));
        assert!(err("FREEZE SLICE s WITH (size = 3)").contains("unknown option \"size\""));
        assert!(err("FREEZE SLICE s WITH (seed = x)").contains("expected a number"));
        assert!(err("DROP SLICE a b").contains("unexpected text"));
        assert!(err("CREATE SLICE s AS ").contains("expected a query"));
        assert!(err("FREEZE SLICE s\nWITH holdout").contains("line 2"));
    }
}
