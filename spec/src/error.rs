//! Spec errors: every problem names the file, the key path and what is allowed.

use std::fmt;

/// One problem found in an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path inside the file (`matrix.rows`, `memories[0].channels`), or `""` for the
    /// whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What is allowed or how to fix it.
    pub help: String,
}

impl Problem {
    /// A problem at `key` with `message` and a `help` line.
    pub fn new(
        key: impl Into<String>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
            help: help.into(),
        }
    }
}

/// All problems found in one input (file or preset). Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file (or `preset:NAME`) the problems were found in.
    pub file: String,
    /// The problems, in the order they were found.
    pub problems: Vec<Problem>,
}

impl SpecError {
    /// An error with a single problem.
    pub fn one(file: impl Into<String>, problem: Problem) -> Self {
        Self {
            file: file.into(),
            problems: vec![problem],
        }
    }

    /// Turns a list of problems into a result: `Ok(())` when empty.
    pub fn check(file: &str, problems: Vec<Problem>) -> Result<(), SpecError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpecError {
                file: file.to_string(),
                problems,
            })
        }
    }

    /// Wraps a TOML syntax error with its line and column in `text`.
    pub fn from_toml_syntax(file: &str, text: &str, err: &toml::de::Error) -> Self {
        let location = err
            .span()
            .map(|s| format!(" (line {})", line_col(text, s.start)))
            .unwrap_or_default();
        Self::one(
            file,
            Problem::new(
                "",
                format!("malformed TOML{location}: {}", err.message().trim()),
                "fix the syntax; see the example files under examples/",
            ),
        )
    }

    /// Wraps a JSON syntax or type error with its line and column and the key path it names.
    pub fn from_json(file: &str, err: &serde_path_to_error::Error<serde_json::Error>) -> Self {
        let inner = err.inner();
        let key = path_key(&err.path().to_string(), &inner.to_string());
        Self::one(
            file,
            Problem::new(
                key,
                inner.to_string(),
                "the file must be a JSON object as written by Hugging Face transformers",
            ),
        )
    }
}

/// Deserializes a parsed TOML value into `T`, naming the key path of any type error or unknown key.
pub fn from_toml_value<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    file: &str,
) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = e.inner().message().trim().to_string();
        let key = path_key(&e.path().to_string(), &message);
        let help = if message.contains("unknown field") || message.contains("unknown variant") {
            "use one of the expected names listed above"
        } else if message.contains("missing field") {
            "add the key; see the example files under examples/"
        } else {
            "see the example files under examples/ for the expected type"
        };
        SpecError::one(file, Problem::new(key, message, help))
    })
}

/// Parses TOML text into `T` (syntax errors with line numbers, type errors with key paths).
pub fn from_toml_text<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, SpecError> {
    let value: toml::Value =
        toml::from_str(text).map_err(|e| SpecError::from_toml_syntax(file, text, &e))?;
    from_toml_value(value, file)
}

/// The key path of a serde error: the path serde reached, plus the field a "missing field" or
/// "unknown field" message names.
fn path_key(path: &str, message: &str) -> String {
    let path = if path == "." { "" } else { path };
    let named = ["unknown field", "missing field"]
        .iter()
        .any(|m| message.contains(m))
        .then(|| message.split('`').nth(1))
        .flatten();
    match named {
        Some(field) if path.is_empty() => field.to_string(),
        Some(field) if !path.ends_with(field) => format!("{path}.{field}"),
        _ => path.to_string(),
    }
}

/// `line:column` (1-based) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}, column {col}")
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {} problem{}",
            self.file,
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            let key = if p.key.is_empty() { "(file)" } else { &p.key };
            writeln!(f, "  - {key}: {}", p.message)?;
            if !p.help.is_empty() {
                writeln!(f, "    help: {}", p.help)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// Collects problems while validating, with helpers for common range checks.
#[derive(Debug, Default)]
pub struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    /// An empty checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem.
    pub fn push(
        &mut self,
        key: impl Into<String>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.problems.push(Problem::new(key, message, help));
    }

    /// Requires `lo <= value <= hi`.
    pub fn range_u64(&mut self, key: &str, value: u64, lo: u64, hi: u64) {
        if value < lo || value > hi {
            self.push(
                key,
                format!("{value} is out of range"),
                format!("allowed: {lo} ..= {hi}"),
            );
        }
    }

    /// Requires `lo <= value <= hi` and a finite value.
    pub fn range_f64(&mut self, key: &str, value: f64, lo: f64, hi: f64) {
        if !value.is_finite() || value < lo || value > hi {
            self.push(
                key,
                format!("{value} is out of range"),
                format!("allowed: {lo} ..= {hi}"),
            );
        }
    }

    /// Requires a power of two.
    pub fn power_of_two(&mut self, key: &str, value: u64) {
        if !value.is_power_of_two() {
            self.push(
                key,
                format!("{value} is not a power of two"),
                "use 1, 2, 4, 8, ...",
            );
        }
    }

    /// Whether any problem has been recorded.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Ends checking: `Ok` when no problem was recorded.
    pub fn finish(self, file: &str) -> Result<(), SpecError> {
        SpecError::check(file, self.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_every_problem() {
        let mut c = Checker::new();
        c.range_u64("matrix.rows", 0, 1, 4096);
        c.power_of_two("matrix.cols", 3);
        let e = c.finish("a.toml").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("a.toml: 2 problems"));
        assert!(s.contains("matrix.rows: 0 is out of range"));
        assert!(s.contains("allowed: 1 ..= 4096"));
        assert!(s.contains("matrix.cols"));
    }

    #[test]
    fn toml_unknown_key_is_named() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            rows: u32,
        }
        let e = from_toml_text::<S>("rowz = 3", "x.toml").unwrap_err();
        assert_eq!(e.problems[0].key, "rowz");
        let e = from_toml_text::<S>("rows = \"a\"", "x.toml").unwrap_err();
        assert_eq!(e.problems[0].key, "rows");
        let e = from_toml_text::<S>("\n\nrows = [", "x.toml").unwrap_err();
        assert!(e.problems[0].message.contains("line 3"), "{e}");
    }
}
