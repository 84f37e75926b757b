//! The `[filter]` condition: a template expression over `response`, `worker` and `connect`,
//! compiled once; a worker is loaded when it is true. `always` compiles to no filter at all.
//! A false condition is reported with the condition's text, for the preview and the logs.

use crate::mapping::Evaluation;
use crate::template::{Compiled, Engine, Roots};

/// A compiled `filter.condition`.
#[derive(Debug)]
pub(crate) struct CompiledFilter {
    compiled: Compiled,
    source: String,
}

impl CompiledFilter {
    /// Compiles `condition`; the error names the position and the problem.
    pub(crate) fn compile(
        engine: &mut Engine,
        condition: &str,
    ) -> Result<(CompiledFilter, Roots), String> {
        let (compiled, roots) = engine.add_condition("filter", condition)?;
        let filter = CompiledFilter {
            compiled,
            source: condition.trim().to_owned(),
        };
        Ok((filter, roots))
    }

    /// `None` when the worker passes; otherwise why it is filtered out (or, when the
    /// condition cannot be evaluated for this record, why it is unloadable).
    pub(crate) fn decide(&self, engine: &Engine, ctx: &minijinja::Value) -> Option<Evaluation> {
        match engine.condition(&self.compiled, ctx) {
            Ok(true) => None,
            Ok(false) => Some(Evaluation::Filtered {
                reason: format!("condition `{}` is false", self.source),
            }),
            Err(problem) => Some(Evaluation::Unloadable {
                reason: format!(
                    "filter condition `{}` could not be evaluated: {problem}",
                    self.source
                ),
            }),
        }
    }
}
