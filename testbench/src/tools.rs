//! Running the Verilog tools (Icarus, Verilator, Yosys) on generated files.

use std::path::Path;
use std::process::Command;

/// A tool run that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program is not installed.
    #[error("`{0}` is not installed (scripts/setup installs it)")]
    Missing(String),
    /// The program ran and failed.
    #[error("`{program}` failed:\n{output}")]
    Failed {
        /// The program.
        program: String,
        /// Its standard output and error.
        output: String,
    },
}

/// Runs `program args` in `dir`, returning its standard output.
pub fn run(dir: &Path, program: &str, args: &[&str]) -> Result<String, ToolError> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ToolError::Missing(program.to_string()),
            _ => ToolError::Failed {
                program: program.to_string(),
                output: e.to_string(),
            },
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(ToolError::Failed {
            program: program.to_string(),
            output: text,
        })
    }
}

/// Whether a missing tool must fail the test run (`CI=true`) rather than skip the test.
pub fn tools_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Unwraps a tool result in a test: a missing tool skips the test (returns `None`) except under
/// `CI=true`, where it fails like any other error.
pub fn in_test<T>(result: Result<T, ToolError>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(ToolError::Missing(p)) if !tools_required() => {
            eprintln!("skipped: `{p}` is not installed (run scripts/setup)");
            None
        }
        Err(e) => panic!("{e}"),
    }
}
