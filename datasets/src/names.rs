//! Names, in one place: what a workspace name (dataset, slice, run, tagger, model) and a
//! column name may be, and how a free-form string (a file stem, a model id, a category
//! label) becomes one. Every sanitiser's output passes its validator (property-tested),
//! so a name made from user input can never be refused later, or become a path.

use crate::error::{DatasetError, Result};

/// The longest name or column name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a dataset (or slice, run, tagger) name: 1-64 of `A-Z a-z 0-9 _ -`, starting
/// with a letter or digit.
///
/// Such a name can never become a path component like `..` or contain a separator,
/// and it is a valid SQL identifier once quoted.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| Err(DatasetError::InvalidName { name: name.to_string(), reason });
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("names are 1 to 64 characters long");
    }
    if !name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return bad("names start with a letter or a digit");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return bad("names use only letters, digits, '_' and '-'");
    }
    Ok(())
}

/// Checks a dataset's name: a [`validate_name`] that is also free as a SQL schema. Each
/// dataset is a schema of the session, beside DataFusion's own `information_schema`,
/// which a dataset of that name could never be reached behind.
pub fn validate_dataset_name(name: &str) -> Result<()> {
    validate_name(name)?;
    if name.eq_ignore_ascii_case("information_schema") {
        return Err(DatasetError::InvalidName {
            name: name.to_string(),
            reason: "information_schema is SQL's own schema (the tables and columns of the session); pick another name",
        });
    }
    Ok(())
}

/// `raw` as a name [`validate_name`] accepts: characters other than `A-Z a-z 0-9 _ -`
/// become `_`, leading `_` and `-` go, at most 64 characters; `fallback` when nothing
/// is left. (`openai/clip-vit-base-patch32` is given with `/` already replaced by `--`.)
pub fn sanitize_name(raw: &str, fallback: &str) -> String {
    let mapped: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let trimmed = mapped.trim_start_matches(['_', '-']);
    let name: String = trimmed.chars().take(MAX_NAME_LEN).collect();
    if name.is_empty() { fallback.to_string() } else { name }
}

/// `raw` as a lower-case identifier that SQL reads unquoted: letters and digits kept
/// (lower-cased), every run of anything else one `_`, no `_` at either end, at most 64
/// characters: `" Traffic light "` → `traffic_light`, `Fashion-MNIST` → `fashion_mnist`.
/// Empty when `raw` has no letter or digit. It may start with a digit: a column made
/// from it gets a prefix (`num_`, a tagger's name).
pub fn identifier(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    let out: String = out.chars().take(MAX_NAME_LEN).collect();
    out.trim_end_matches('_').to_string()
}

/// A column name as SQL sees it unquoted: lower case; letters, digits and `_`, not
/// starting with a digit, at most 64 characters. Returns the lower-cased name.
pub fn validate_column(raw: &str) -> std::result::Result<String, String> {
    let name = raw.to_ascii_lowercase();
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_LEN;
    if ok {
        Ok(name)
    } else {
        Err(format!("column {raw:?}: names are letters, digits and '_' (not starting with a digit)"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_that_could_become_paths_are_refused() {
        for bad in ["", "..", "a/b", "a\\b", ".hidden", "-x", "a b", "é", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["fashion_mnist", "coco-2017", "A1", "9lives"] {
            validate_name(good).unwrap();
            validate_dataset_name(good).unwrap();
        }
        // A valid name, but SQL's own schema: no dataset could be queried behind it.
        validate_name("information_schema").unwrap();
        for reserved in ["information_schema", "INFORMATION_SCHEMA"] {
            let err = validate_dataset_name(reserved).unwrap_err().to_string();
            assert!(err.contains("SQL's own schema"), "{err}");
        }
    }

    #[test]
    fn sanitisers_keep_what_they_can() {
        assert_eq!(sanitize_name("openai--clip-vit-base-patch32", "x"), "openai--clip-vit-base-patch32");
        assert_eq!(sanitize_name("../my vocab", "x"), "my_vocab");
        assert_eq!(sanitize_name("..", "images"), "images");
        assert_eq!(identifier(" Traffic light "), "traffic_light");
        assert_eq!(identifier("hot-dog!"), "hot_dog");
        assert_eq!(identifier("Fashion-MNIST"), "fashion_mnist");
        assert_eq!(identifier("__"), "");
        assert!(validate_column("NumPeople").unwrap() == "numpeople" && validate_column("1x").is_err());
    }

    proptest! {
        /// Whatever a user's file is called, the name made from it is a valid name.
        #[test]
        fn every_sanitised_name_validates(raw in "\\PC{0,80}") {
            prop_assert!(validate_name(&sanitize_name(&raw, "images")).is_ok());
        }

        /// Every identifier is a valid name when non-empty, and a valid column with a prefix.
        #[test]
        fn every_identifier_validates(raw in "\\PC{0,80}") {
            let id = identifier(&raw);
            if !id.is_empty() {
                prop_assert!(validate_name(&id).is_ok(), "{id:?}");
                prop_assert!(validate_column(&format!("num_{id}")).is_ok() || id.len() + 4 > MAX_NAME_LEN, "{id:?}");
            }
        }
    }
}
