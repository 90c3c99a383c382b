//! Configuration errors and source positions.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A configuration error: where it is (file, and line/column when the error has a position) and
/// what is wrong with what is expected instead.
///
/// Displays as `FILE:LINE:COL: MESSAGE`, or `FILE: MESSAGE` when there is no position (a file
/// that cannot be read, a missing section). Messages never contain secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file the error is in (the main configuration or an order file).
    pub file: PathBuf,
    /// 1-based line, when the error has a position.
    pub line: Option<usize>,
    /// 1-based column (in characters), when the error has a position.
    pub col: Option<usize>,
    /// What is wrong and what is expected, without the position.
    pub message: String,
}

impl ConfigError {
    /// An error without a position in `file`.
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self { file: file.into(), line: None, col: None, message: message.into() }
    }

    /// The position as a [`Location`], when the error has one.
    pub fn location(&self) -> Option<Location> {
        Some(Location { file: self.file.clone(), line: self.line?, col: self.col? })
    }

    fn render(&self) -> String {
        match (self.line, self.col) {
            (Some(line), Some(col)) => {
                format!("{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            (Some(line), None) => format!("{}:{line}: {}", self.file.display(), self.message),
            _ => format!("{}: {}", self.file.display(), self.message),
        }
    }
}

/// A position in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// The text of one configuration file, to turn byte spans into positions.
pub(super) struct Source<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl<'a> Source<'a> {
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        Self { path, text }
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    pub(super) fn location(&self, span: &Range<usize>) -> Location {
        let (line, col) = self.line_col(span.start);
        Location { file: self.path.to_path_buf(), line, col }
    }

    /// An error at the start of `span`.
    pub(super) fn error(&self, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, col) = self.line_col(span.start);
        ConfigError { file: self.path.to_path_buf(), line: Some(line), col: Some(col), message: message.into() }
    }

    /// An error without a position in this file.
    pub(super) fn error_here(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.path, message)
    }

    /// A warning line at the start of `span`, formatted like an error.
    pub(super) fn warning(&self, span: &Range<usize>, message: impl fmt::Display) -> String {
        format!("{}: {message}", self.location(span))
    }

    /// Converts a toml parse or deserialization error, keeping its position.
    pub(super) fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let message = error.message().trim_end().to_owned();
        match error.span() {
            Some(span) => self.error(&span, message),
            None => self.error_here(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_from_one() {
        let src = Source::new(Path::new("f.toml"), "a = 1\nbé = \"x\"\n\nc");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(4), (1, 5));
        assert_eq!(src.line_col(6), (2, 1));
        // "é" is two bytes but one column.
        assert_eq!(src.line_col(10), (2, 4));
        assert_eq!(src.line_col(17), (4, 1));
        // Offsets past the end clamp to the end.
        assert_eq!(src.line_col(1000), (4, 2));
    }

    #[test]
    fn display_with_and_without_position() {
        let src = Source::new(Path::new("/etc/dcvd/dcvd.toml"), "x\ny = 1");
        assert_eq!(src.error(&(4..5), "bad").to_string(), "/etc/dcvd/dcvd.toml:2:3: bad");
        assert_eq!(
            ConfigError::new("/etc/dcvd/dcvd.toml", "cannot read").to_string(),
            "/etc/dcvd/dcvd.toml: cannot read"
        );
    }
}
