//! Errors found in a workload file, each naming the file, the line and the
//! field, so a bad sweep is refused before anything runs.

use std::fmt;
use std::path::PathBuf;

/// A workload file that cannot be run.
#[derive(Debug)]
pub enum WorkloadError {
    /// The file could not be read at all.
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but something in it is wrong.
    Invalid {
        file: PathBuf,
        /// 1-based line of the offending field, when it could be found.
        line: Option<usize>,
        /// Dotted path of the field, e.g. `producer.linger.ms` or `sweep.acks`.
        field: String,
        message: String,
    },
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadError::Read { file, source } => {
                write!(f, "{}: cannot read the workload: {source}", file.display())
            }
            WorkloadError::Invalid {
                file,
                line,
                field,
                message,
            } => {
                write!(f, "{}", file.display())?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                write!(f, ": field `{field}`: {message}")
            }
        }
    }
}

impl std::error::Error for WorkloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkloadError::Read { source, .. } => Some(source),
            WorkloadError::Invalid { .. } => None,
        }
    }
}

/// A problem found while resolving settings, before the file and line are
/// attached: the dotted field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}
