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

    /// Wraps a TOML parse or type error (unknown key, wrong type) with the key path it names.
    pub fn from_toml(file: &str, err: &toml::de::Error) -> Self {
        let message = err.message().to_string();
        let key = toml_error_key(&message);
        let help = if message.contains("unknown field") {
            "remove the key or fix its spelling; the expected keys are listed above".to_string()
        } else {
            "see the example files under examples/ for the expected layout".to_string()
        };
        let location = err
            .span()
            .map(|s| format!(" (at byte {})", s.start))
            .unwrap_or_default();
        Self::one(
            file,
            Problem::new(key, format!("{message}{location}"), help),
        )
    }

    /// Wraps a JSON parse or type error with its line and column.
    pub fn from_json(file: &str, err: &serde_json::Error) -> Self {
        Self::one(
            file,
            Problem::new(
                "",
                format!("{err}"),
                "the file must be a JSON object as written by Hugging Face transformers",
            ),
        )
    }
}

/// Extracts a key named in a serde message such as "unknown field `rowz`".
fn toml_error_key(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .filter(|_| message.contains('`'))
        .unwrap_or("")
        .to_string()
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
        let err = toml::from_str::<S>("rowz = 3").unwrap_err();
        let e = SpecError::from_toml("x.toml", &err);
        assert_eq!(e.problems[0].key, "rowz");
    }
}
