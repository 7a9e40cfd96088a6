//! The output formats `ctl` commands accept (`-f/--format`), parsed from their names.

use std::fmt;
use std::str::FromStr;

/// How a `ctl` view is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// patronictl's bordered table.
    #[default]
    Pretty,
    /// A JSON list of objects, one per row (as Python's `json.dumps` writes it).
    Json,
    /// The same objects as a YAML list, keys sorted.
    Yaml,
    /// A header row and one row per line, tab separated.
    Tsv,
}

/// A `--format` value that is not one of the known names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown output format {given:?}: use one of pretty, json, yaml, tsv")]
pub struct ParseFormatError {
    /// What the user wrote.
    pub given: String,
}

impl FromStr for OutputFormat {
    type Err = ParseFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pretty" => Ok(OutputFormat::Pretty),
            "json" => Ok(OutputFormat::Json),
            // patronictl accepts both spellings.
            "yaml" | "yml" => Ok(OutputFormat::Yaml),
            "tsv" => Ok(OutputFormat::Tsv),
            _ => Err(ParseFormatError {
                given: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputFormat::Pretty => "pretty",
            OutputFormat::Json => "json",
            OutputFormat::Yaml => "yaml",
            OutputFormat::Tsv => "tsv",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_names_and_names_the_valid_ones_otherwise() {
        assert_eq!("pretty".parse(), Ok(OutputFormat::Pretty));
        assert_eq!("JSON".parse(), Ok(OutputFormat::Json));
        assert_eq!("yml".parse(), Ok(OutputFormat::Yaml));
        assert_eq!("tsv".parse(), Ok(OutputFormat::Tsv));
        let err = "xml".parse::<OutputFormat>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown output format \"xml\": use one of pretty, json, yaml, tsv"
        );
    }
}
