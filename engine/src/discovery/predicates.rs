//! Columns of `images` turned into the predicates slice discovery combines, each with a
//! readable description and the SQL condition that selects the same rows.
//!
//! - numbers: quantile ranges with rounded, readable edges (`brightness < 0.21`,
//!   `0.21 <= brightness < 0.35`, `brightness >= 0.6`);
//! - counts (integer columns named `num_*`, or small non-negative integers): 0, 1, 2, 3, 4, 5+;
//! - booleans and few-valued columns: one predicate per value;
//! - strings: the most frequent values, plus `other` for the rest;
//! - NULL is a value of its own (`weather IS NULL`): untagged images can be a population.
//!
//! Identifiers and hashes (`image_id`, `uri`, `sha256`, nearly-unique strings) and
//! constant columns say nothing about a population and are skipped, with the reason.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;

use super::sliceline::{Bitmap, bitmap_from};

/// Columns never used: they identify an image rather than describe it.
const IDENTIFIER_COLUMNS: [&str; 5] = ["image_id", "uri", "sha256", "path", "bytes"];
/// String columns keep at most this many values of their own (the rest is `other`): enough
/// for the labels of most classification datasets.
const TOP_VALUES: usize = 16;
/// Numeric columns are cut at these quantiles.
const QUANTILES: [f64; 4] = [0.2, 0.4, 0.6, 0.8];
/// A string column with more distinct values than this share of its rows is an identifier.
const IDENTIFIER_SHARE: f64 = 0.5;

/// One predicate over one column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnPredicate {
    /// The column.
    pub column: String,
    /// For a person: `brightness < 0.21`, `label = 'Shirt'`.
    pub description: String,
    /// A SQL condition on `images` selecting the same rows.
    pub sql: String,
    /// The rows it holds for.
    pub rows: Bitmap,
}

/// The predicates of every usable column, and the columns left out with the reason.
#[derive(Debug, Clone, Default)]
pub struct Predicates {
    /// Predicates, grouped by column in column order.
    pub predicates: Vec<ColumnPredicate>,
    /// The columns used, in order (a predicate's column index points here).
    pub columns: Vec<String>,
    /// (column, why it was not used).
    pub skipped: Vec<(String, String)>,
}

impl Predicates {
    /// The column index of predicate `p`.
    pub fn column_of(&self, p: usize) -> usize {
        let name = &self.predicates[p].column;
        self.columns.iter().position(|c| c == name).expect("predicates name a used column")
    }
}

/// A column name as SQL: bare when it is a plain lower-case identifier, else quoted.
pub fn quote_column(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { name.to_string() } else { format!("\"{}\"", name.replace('"', "\"\"")) }
}

fn quote_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `x` rounded to `digits` significant digits (for readable range edges).
fn round_significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// A number as SQL and for people: no exponent, no trailing zeros.
fn show(x: f64) -> String {
    let s = format!("{x:.10}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// Builds the predicates of `columns` (name, values; all the same length).
pub fn build(columns: &[(String, ArrayRef)]) -> datafusion::error::Result<Predicates> {
    let mut out = Predicates::default();
    for (name, array) in columns {
        if IDENTIFIER_COLUMNS.contains(&name.as_str()) {
            out.skipped.push((name.clone(), "identifies an image".into()));
            continue;
        }
        let made = match array.data_type() {
            DataType::Boolean => categorical(name, &cast(array, &DataType::Utf8)?, usize::MAX, true),
            t if t.is_integer() => integer(name, &cast(array, &DataType::Float64)?),
            t if t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) => {
                numeric(name, &cast(array, &DataType::Float64)?)
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..) => {
                categorical(name, &cast(array, &DataType::Utf8)?, TOP_VALUES, false)
            }
            other => Err(format!("type {other} is not binned")),
        };
        match made {
            Ok(predicates) if predicates.len() > 1 => {
                out.columns.push(name.clone());
                out.predicates.extend(predicates);
            }
            Ok(_) => out.skipped.push((name.clone(), "has one value only".into())),
            Err(reason) => out.skipped.push((name.clone(), reason)),
        }
    }
    Ok(out)
}

fn null_predicate(name: &str, array: &dyn Array) -> Option<ColumnPredicate> {
    (array.null_count() > 0).then(|| ColumnPredicate {
        column: name.to_string(),
        description: format!("{name} IS NULL"),
        sql: format!("{} IS NULL", quote_column(name)),
        rows: bitmap_from((0..array.len()).map(|r| array.is_null(r))),
    })
}

/// One predicate per frequent value, `other` for the rest, and NULL.
fn categorical(name: &str, array: &ArrayRef, top: usize, boolean: bool) -> Result<Vec<ColumnPredicate>, String> {
    let strings = array.as_string::<i32>();
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for value in strings.iter().flatten() {
        *counts.entry(value).or_default() += 1;
    }
    let valid = strings.len() - strings.null_count();
    if !boolean && counts.len() > 20 && counts.len() as f64 > IDENTIFIER_SHARE * valid as f64 {
        return Err(format!("{} distinct values in {valid} rows: an identifier", counts.len()));
    }
    let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kept: Vec<&str> = by_count.iter().take(top).map(|(v, _)| *v).collect();
    let column = quote_column(name);
    let mut out: Vec<ColumnPredicate> = kept
        .iter()
        .map(|&value| ColumnPredicate {
            column: name.to_string(),
            description: if boolean {
                format!("{name} = {value}")
            } else {
                format!("{name} = {}", quote_string(value))
            },
            sql: if boolean { format!("{column} = {value}") } else { format!("{column} = {}", quote_string(value)) },
            rows: bitmap_from(strings.iter().map(|v| v == Some(value))),
        })
        .collect();
    if by_count.len() > kept.len() {
        let list: Vec<String> = kept.iter().map(|v| quote_string(v)).collect();
        out.push(ColumnPredicate {
            column: name.to_string(),
            description: format!("{name} is another value ({} more)", by_count.len() - kept.len()),
            sql: format!("{column} NOT IN ({})", list.join(", ")),
            rows: bitmap_from(strings.iter().map(|v| v.is_some_and(|v| !kept.contains(&v)))),
        });
    }
    out.extend(null_predicate(name, array.as_ref()));
    Ok(out)
}

/// Counts become 0..4 and 5+; other integers with few values are categories; the rest
/// are numbers.
fn integer(name: &str, array: &ArrayRef) -> Result<Vec<ColumnPredicate>, String> {
    let values = array.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    let present: Vec<f64> = values.iter().flatten().collect();
    let non_negative = present.iter().all(|&v| v >= 0.0);
    let max = present.iter().copied().fold(0.0f64, f64::max);
    if non_negative && (name.starts_with("num_") || max <= 5.0) {
        let column = quote_column(name);
        let mut out: Vec<ColumnPredicate> = (0..5)
            .filter(|&c| present.contains(&(c as f64)))
            .map(|c| ColumnPredicate {
                column: name.to_string(),
                description: format!("{name} = {c}"),
                sql: format!("{column} = {c}"),
                rows: bitmap_from(values.iter().map(|v| v == Some(c as f64))),
            })
            .collect();
        if max >= 5.0 {
            out.push(ColumnPredicate {
                column: name.to_string(),
                description: format!("{name} >= 5"),
                sql: format!("{column} >= 5"),
                rows: bitmap_from(values.iter().map(|v| v.is_some_and(|v| v >= 5.0))),
            });
        }
        out.extend(null_predicate(name, array.as_ref()));
        return Ok(out);
    }
    numeric(name, array)
}

/// Quantile ranges with readable edges, plus NULL.
fn numeric(name: &str, array: &ArrayRef) -> Result<Vec<ColumnPredicate>, String> {
    let values = array.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    let mut sorted: Vec<f64> = values.iter().flatten().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let Some((&min, &max)) = sorted.first().zip(sorted.last()) else {
        return Err("has no values".into());
    };
    // Edges at the quantiles, rounded to as few significant digits as keep them apart.
    let raw: Vec<f64> = QUANTILES.iter().map(|q| sorted[((sorted.len() - 1) as f64 * q).round() as usize]).collect();
    let edges = (2..=6)
        .map(|digits| {
            let mut e: Vec<f64> =
                raw.iter().map(|&x| round_significant(x, digits)).filter(|&x| x > min && x <= max).collect();
            e.dedup();
            e
        })
        .find(|e| {
            let mut distinct_raw = raw.clone();
            distinct_raw.retain(|&x| x > min && x <= max);
            distinct_raw.dedup();
            e.len() == distinct_raw.len()
        })
        .unwrap_or_default();
    let column = quote_column(name);
    let mut out = Vec::new();
    for i in 0..=edges.len() {
        let (low, high) = (i.checked_sub(1).map(|j| edges[j]), edges.get(i).copied());
        let (description, sql) = match (low, high) {
            (None, Some(h)) => (format!("{name} < {}", show(h)), format!("{column} < {}", show(h))),
            (Some(l), Some(h)) => (
                format!("{} <= {name} < {}", show(l), show(h)),
                format!("{column} >= {} AND {column} < {}", show(l), show(h)),
            ),
            (Some(l), None) => (format!("{name} >= {}", show(l)), format!("{column} >= {}", show(l))),
            (None, None) => (format!("{name} IS NOT NULL"), format!("{column} IS NOT NULL")),
        };
        let rows = bitmap_from(
            values.iter().map(|v| v.is_some_and(|v| low.is_none_or(|l| v >= l) && high.is_none_or(|h| v < h))),
        );
        out.push(ColumnPredicate { column: name.to_string(), description, sql, rows });
    }
    out.extend(null_predicate(name, array.as_ref()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};

    use super::*;

    fn rows(p: &ColumnPredicate, n: usize) -> Vec<usize> {
        (0..n).filter(|&r| p.rows[r / 64] >> (r % 64) & 1 == 1).collect()
    }

    #[test]
    fn numbers_become_readable_quantile_ranges_that_cover_every_row_once() {
        let values: Vec<Option<f64>> =
            (0..1000).map(|i| if i % 100 == 0 { None } else { Some(i as f64 * 0.000_731 + 0.01) }).collect();
        let array: ArrayRef = Arc::new(Float64Array::from(values));
        let p = build(&[("brightness".into(), array)]).unwrap();
        let descriptions: Vec<&str> = p.predicates.iter().map(|p| p.description.as_str()).collect();
        assert_eq!(descriptions.len(), 6, "{descriptions:?}");
        assert!(descriptions[0].starts_with("brightness < 0."), "{descriptions:?}");
        assert!(descriptions[1].contains(" <= brightness < "), "{descriptions:?}");
        assert_eq!(descriptions[5], "brightness IS NULL");
        let mut covered = vec![0; 1000];
        for pred in &p.predicates {
            for r in rows(pred, 1000) {
                covered[r] += 1;
            }
        }
        assert!(covered.iter().all(|&c| c == 1), "every row in exactly one predicate");
        // Edges are short: at most 2 significant digits here.
        assert!(descriptions[0].len() <= "brightness < 0.16".len(), "{descriptions:?}");
    }

    #[test]
    fn counts_strings_booleans_and_identifiers() {
        let n = 200;
        let faces: ArrayRef = Arc::new(Int64Array::from((0..n).map(|i| (i % 9) as i64).collect::<Vec<_>>()));
        let weather: ArrayRef = Arc::new(StringArray::from(
            (0..n).map(|i| if i % 10 == 0 { None } else { Some(format!("w{:02}", i % 19)) }).collect::<Vec<_>>(),
        ));
        let ids: ArrayRef = Arc::new(StringArray::from((0..n).map(|i| format!("x{i}")).collect::<Vec<_>>()));
        let flag: ArrayRef = Arc::new(BooleanArray::from((0..n).map(|i| i % 3 == 0).collect::<Vec<_>>()));
        let constant: ArrayRef = Arc::new(Int64Array::from(vec![4; n]));
        let columns = vec![
            ("image_id".to_string(), ids.clone()),
            ("num_faces".to_string(), faces),
            ("weather".to_string(), weather),
            ("caption".to_string(), ids),
            ("is_night".to_string(), flag),
            ("width".to_string(), constant),
        ];
        let p = build(&columns).unwrap();
        assert_eq!(p.columns, ["num_faces", "weather", "is_night"]);
        let skipped: Vec<&str> = p.skipped.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(skipped, ["image_id", "caption", "width"]);
        let of = |c: &str| p.predicates.iter().filter(|x| x.column == c).map(|x| x.sql.clone()).collect::<Vec<_>>();
        assert_eq!(
            of("num_faces"),
            ["num_faces = 0", "num_faces = 1", "num_faces = 2", "num_faces = 3", "num_faces = 4", "num_faces >= 5"]
        );
        let weather = of("weather");
        assert_eq!(weather.len(), 18, "16 values, other, NULL: {weather:?}");
        assert!(weather[16].starts_with("weather NOT IN ('w"), "{weather:?}");
        assert_eq!(weather[17], "weather IS NULL");
        assert_eq!(of("is_night"), ["is_night = false", "is_night = true"]);
        assert_eq!(quote_column("Label"), "\"Label\"");
    }
}
