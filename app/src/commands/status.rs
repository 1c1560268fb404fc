//! `tributary status`: how far each source's capture has come, as its server tells it, and
//! how far each sink has applied each of its sources.

use crate::config::Config;
use serde::Serialize;
use std::fmt;
use tributary_capture::SourceStatus;
use tributary_sinks::SinkStatus;

/// What `tributary status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// Every source, by name.
    pub sources: Vec<SourceStatus>,
    /// Every sink, by name.
    pub sinks: Vec<SinkStatus>,
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.sources {
            writeln!(f, "{s}")?;
        }
        for s in &self.sinks {
            writeln!(f, "{s}")?;
        }
        Ok(())
    }
}

/// Asks every source's server and every sink of `config`; an unreachable one is reported
/// as such, not as an error.
pub async fn report(config: &Config) -> StatusReport {
    let mut sources = Vec::new();
    for (name, source) in &config.sources {
        sources.push(source.status(name).await);
    }
    let mut sinks = Vec::new();
    for (name, sink) in &config.sinks {
        let loops = config.loops(name);
        let applied: Vec<&str> = loops.iter().map(|(source, _)| source.as_str()).collect();
        sinks.push(sink.target().status(name, &applied).await);
    }
    StatusReport { sources, sinks }
}
