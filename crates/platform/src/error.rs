//! Errors as logs and parking reasons show them: the error with the chain of its causes.

use std::{error::Error, fmt, sync::Arc};

/// The cause an error keeps, shared so that the error can be cloned (one failure reported to
/// several callers) and of any type (several libraries fail the same way).
pub type Cause = Arc<dyn Error + Send + Sync + 'static>;

/// Displays an error followed by each of its sources, `error: cause: root cause`. A source whose
/// text the message before it already ends with is not repeated (errors that print their source
/// themselves).
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous = self.0.to_string();
        f.write_str(&previous)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            let text = error.to_string();
            if !text.is_empty() && !previous.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            previous = text;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("the store failed")]
        Store(#[source] Inner),
        #[error("the store failed: {0}")]
        Printed(#[source] Inner),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Inner;

    #[test]
    fn every_cause_is_shown_once() {
        assert_eq!(ErrorChain(&Outer::Store(Inner)).to_string(), "the store failed: connection refused");
        assert_eq!(ErrorChain(&Outer::Printed(Inner)).to_string(), "the store failed: connection refused");
    }
}
